"""The `mrcnn` command.

    mrcnn info --config-file F [--height H --width W] [KEY VALUE ...]
        parameter count and FLOPs (fvcore) of the model at one input size
    mrcnn train --config-file F [--resume] [--eval-only] [--num-gpus N] [--num-machines M]
                [--machine-rank R] [--dist-url URL] [KEY VALUE ...]
        trains (or with --eval-only evaluates MODEL.WEIGHTS) like detectron2's train_net.py
    mrcnn demo (--config-file F | --model-ts PATH) --input IMAGES... --output DIR
               [--confidence-threshold T] [KEY VALUE ...]
        draws masks, boxes, labels and keypoints on images and writes PNGs
    mrcnn convert --from {torchvision,detectron2,detectron} [--kind KIND] [--bn-eps EPS]
                  [--remap-classes coco-to-cityscapes] IN OUT
        converts a checkpoint to this package's (detectron2's) parameter names (.pth or .pkl by OUT);
        --remap-classes also keeps only the class rows a new label set needs (fine-tuning init)
    mrcnn export --config-file F --output DIR [--method scripting|tracing] [--plan auto|fixed|none|FILE]
                 [--triton REPO [--triton-name NAME] [--triton-device cpu|cuda] [--triton-instances N]] [KEY VALUE ...]
        writes DIR/model.ts (TorchScript, preprocessing and postprocessing inside) and DIR/model.json;
        --triton also writes a Triton model repository REPO/NAME/{config.pbtxt,1/model.pt}
    mrcnn bench [--threads N] [--device cpu|cuda] [--rounds R] [--skip CANDIDATE ...] [--skip-training] [--plan P] [--isa-caps] [--output DIR]
        latency, GFLOP/s and memory against torchvision's Mask R-CNN, interleaved in one run
"""
import argparse
import json
import os
import pickle
import sys
from typing import List, Optional, Tuple

__all__ = ["main", "EXIT_STATUS"]

# Exit statuses of a user error, by what went wrong (README and docs/RELIABILITY.md list them).
EXIT_STATUS = {
    "failed inputs": 1,     # the command ran, some inputs could not be processed (mrcnn demo)
    "usage": 2,             # a bad flag, config key or value, an unknown dataset or choice
    "file": 3,              # a missing or unreadable file
    "bad file": 4,          # a file that is not what it should be: truncated, hostile, wrong layout
    "device": 5,            # the requested device is not available
    "internal": 70,         # anything else: a bug; --debug shows the traceback
}


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


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    cfg = _load_cfg(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    plan = "none" if args.no_fast else args.plan
    path = export_model(cfg, args.output, method=args.method, plan=plan)
    print(f"wrote {path} and {path.parent / 'model.json'}")
    meta = json.loads((path.parent / "model.json").read_text())
    from .modeling.inference_plan import InferencePlan, describe

    print(f"inference {describe(InferencePlan.from_dict(meta['inference_plan']))}")
    if args.triton:
        from .export.triton import write_triton_repository

        folder = write_triton_repository(str(path), args.triton, name=args.triton_name, device=args.triton_device,
                                         instances=args.triton_instances)
        print(f"wrote the Triton model repository {args.triton} (model {folder.name}: config.pbtxt, 1/model.pt)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert_checkpoint
    from .checkpoint.convert import convert_checkpoint_remapped

    if args.remap_classes:
        state = convert_checkpoint_remapped(args.source, args.input, args.output, args.remap_classes,
                                            kind=args.kind, bn_eps=args.bn_eps)
    else:
        state = convert_checkpoint(args.source, args.input, args.output, kind=args.kind, bn_eps=args.bn_eps)
    print(f"wrote {len(state)} tensors to {args.output}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(args)
    return 0


def _folder_name(value: str) -> str:
    """argparse type of a name that becomes one folder (no separators, not hidden)."""
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise argparse.ArgumentTypeError(f"must be a plain folder name, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrcnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="let errors through with their traceback (also MRCNN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameter count and FLOPs of a model")
    info.add_argument("--config-file", required=True, help="a YAML config (e.g. under configs/)")
    info.add_argument("--height", type=int, default=800, help="input height in pixels (default 800)")
    info.add_argument("--width", type=int, default=1216, help="input width in pixels (default 1216)")
    info.add_argument("--seed", type=int, default=0, help="seed of the random weights and image")
    info.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    info.set_defaults(func=_cmd_info)

    from .engine.train_cli import add_train_parser

    add_train_parser(sub)

    from .demo import add_demo_parser

    add_demo_parser(sub)

    from .checkpoint.convert import CLASS_REMAPS, SOURCES
    from .checkpoint import TORCHVISION_KINDS

    convert = sub.add_parser("convert", help="convert torchvision / detectron2 / Detectron checkpoints",
                             description="Converts a checkpoint into this package's (detectron2's) parameter "
                                         "names. OUT's extension picks the format: .pth or .pkl (model zoo).")
    convert.add_argument("--from", dest="source", choices=SOURCES, required=True,
                         help="torchvision: a torchvision state_dict (needs --kind); detectron: a Caffe2 "
                              "Detectron .pkl (e.g. R-50.pkl); detectron2: a detectron2 .pth / model-zoo .pkl")
    convert.add_argument("--kind", choices=sorted(TORCHVISION_KINDS), help="torchvision model kind")
    convert.add_argument("--bn-eps", type=float, default=None,
                         help="batch-norm eps the torchvision weights ran with (default 0 for detection "
                              "models, as torchvision runs its COCO weights; 1e-5 for resnet)")
    convert.add_argument("--remap-classes", choices=sorted(CLASS_REMAPS), default=None, metavar="REMAP",
                         help="after converting, keep only the class rows (box predictor cls_score with its "
                              "background row last, bbox_pred's 4 rows per class, one mask predictor channel "
                              "per class) that a new label set needs, each copied from its source class, to "
                              "initialise fine-tuning. coco-to-cityscapes: an 80-class COCO model -> the 8 "
                              "Cityscapes classes person, rider (from COCO person), car, truck, bus, train, "
                              "motorcycle, bicycle (projects/Cityscapes). Choices: "
                              + ", ".join(sorted(CLASS_REMAPS)))
    convert.add_argument("input", help="checkpoint to read")
    convert.add_argument("output", help="file to write (.pth or .pkl)")
    convert.set_defaults(func=_cmd_convert)

    export = sub.add_parser("export", help="write a deployable TorchScript model")
    export.add_argument("--config-file", required=True, help="a YAML config; MODEL.WEIGHTS gives the weights")
    export.add_argument("--output", required=True, help="folder for model.ts and model.json")
    export.add_argument("--method", choices=["scripting", "tracing"], default="scripting",
                        help="scripting (default) compiles everything; tracing traces the backbone")
    export.add_argument("--plan", default=None, metavar="auto|fixed|none|FILE",
                        help="the fast inference plan set in the file: auto (default, or $MRCNN_INFERENCE_PLAN) "
                             "measures candidates here on an image of the test size and keeps the fastest; "
                             "fixed: the CPU rule; none: the network as built; FILE: a plan JSON. Every "
                             "alternative stays in the file: the C++ library re-measures on another machine")
    export.add_argument("--no-fast", action="store_true", help="the same as --plan none")
    export.add_argument("--triton", metavar="DIR", default=None,
                        help="also write a Triton Inference Server model repository (PyTorch backend) in DIR")
    export.add_argument("--triton-name", type=_folder_name, default="mrcnn",
                        help="the model's name in the repository (default mrcnn)")
    export.add_argument("--triton-device", choices=["cpu", "cuda"], default="cpu",
                        help="where Triton runs the model instances (default cpu)")
    export.add_argument("--triton-instances", type=int, default=1, help="model instances Triton runs (default 1)")
    export.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    export.set_defaults(func=_cmd_export)

    from .bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="benchmark against torchvision's Mask R-CNN (one run, interleaved)")
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)
    return parser


def classify_error(error: BaseException) -> Tuple[str, str]:
    """(kind in EXIT_STATUS, one-line message) of an exception raised by a command."""
    from .checkpoint.formats import CheckpointError
    from .modeling.inference_plan import PlanError
    from .utils.errors import DeviceUnavailableError

    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(message.split()) or type(error).__name__
    if isinstance(error, (CheckpointError, PlanError, pickle.UnpicklingError, EOFError)):
        return "bad file", message
    if isinstance(error, DeviceUnavailableError):
        return "device", message
    if isinstance(error, OSError):  # missing, unreadable, not an image (ImageReadError)
        if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        return "file", message
    if isinstance(error, (ValueError, KeyError)):  # config keys and values, datasets, arguments
        return "usage", message
    return "internal", f"{type(error).__name__}: {message} (run with --debug for the traceback)"


def main(argv: Optional[List[str]] = None) -> int:
    """Runs one command; a user error is one line on stderr, `mrcnn <command>: error: ...`, and
    its EXIT_STATUS, never a traceback (`--debug` or MRCNN_DEBUG=1 lets the exception through)."""
    args = build_parser().parse_args(argv)
    if args.debug or os.environ.get("MRCNN_DEBUG", "") not in ("", "0"):
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"mrcnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place user errors become a line and a status
        kind, message = classify_error(e)
        print(f"mrcnn {args.command}: error: {message}", file=sys.stderr)
        return EXIT_STATUS[kind]


if __name__ == "__main__":
    sys.exit(main())
