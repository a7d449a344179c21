"""The `mrcnn` command.

    mrcnn info --config-file F [--height H --width W] [KEY VALUE ...]
        parameter count and FLOPs (fvcore) of the model at one input size
"""
import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def _load_cfg(config_file: Optional[str], opts: List[str]):
    from .config import get_cfg

    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(opts)
    return cfg


def _cmd_info(args: argparse.Namespace) -> int:
    from .modeling.complexity import count_flops, count_parameters
    from .modeling import build_model

    cfg = _load_cfg(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    total, trainable = count_parameters(model)
    print(f"config: {args.config_file}")
    print(f"parameters: {total:,} ({trainable:,} trainable)")
    flops = count_flops(model, args.height, args.width, seed=args.seed)
    print(f"input: 3x{args.height}x{args.width}, detections kept: {flops.num_detections}")
    print(f"multiply-adds (fvcore 'flops'): {flops.total / 1e9:.1f} G, i.e. {2 * flops.total / 1e9:.1f} GFLOP")
    for name, value in flops.by_module:
        print(f"  {name:<24} {value / 1e9:8.1f} G")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrcnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameter count and FLOPs of a model")
    info.add_argument("--config-file", required=True, help="a YAML config (e.g. under configs/)")
    info.add_argument("--height", type=int, default=800, help="input height in pixels (default 800)")
    info.add_argument("--width", type=int, default=1216, help="input width in pixels (default 1216)")
    info.add_argument("--seed", type=int, default=0, help="seed of the random weights and image")
    info.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
