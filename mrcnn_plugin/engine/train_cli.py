"""The `mrcnn train` command: train (or evaluate) a model from a config, on one process or many.

    mrcnn train --config-file F [--resume] [--eval-only] [--num-gpus N] [--num-machines M]
                [--machine-rank R] [--dist-url URL] [KEY VALUE ...]

Flags and the trailing `KEY VALUE` overrides are detectron2's (tools/train_net.py).
Each process: config = defaults + F + overrides; seed = SEED (drawn once, the same on
every process, when SEED < 0) + rank for python, numpy and torch; the config with the
resolved seed is written to OUTPUT_DIR/config.yaml; log lines go to stderr and
OUTPUT_DIR/log.txt (log.txt.rank<r> for the other processes).

`add_train_parser(subparsers)` registers the subcommand on the `mrcnn` parser;
`main(argv)` runs it on its own (argv without the word "train").
"""
import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .launch import all_gather_objects, get_rank, get_world_size, is_main_process, launch
from ..utils.errors import DeviceUnavailableError

__all__ = ["add_train_parser", "main", "run_train", "setup", "seed_all_rng", "setup_logging", "DESCRIPTION"]

logger = logging.getLogger(__name__)

DESCRIPTION = """Train a model (or evaluate it with --eval-only) from a detectron2-style config.

Outputs in OUTPUT_DIR: config.yaml, log.txt, metrics.json, TensorBoard events,
model_NNNNNNN.pth / model_final.pth / last_checkpoint, curves.png, inference/.

examples:
  mrcnn train --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml \\
      --num-gpus 8 SOLVER.IMS_PER_BATCH 16 OUTPUT_DIR output/r50
  mrcnn train --config-file F --resume                      # continue from OUTPUT_DIR's newest checkpoint
  mrcnn train --config-file F --eval-only MODEL.WEIGHTS output/r50/model_final.pth
  torchrun --nproc_per_node 2 -m mrcnn_plugin.engine.train_cli --config-file F   # like --num-gpus 2
"""

# Marks the handlers setup_logging added, so a second call replaces them instead of doubling them.
_HANDLER_TAG = "_mrcnn_train_handler"


# ----------------------------------------------------------------------------- arguments


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in OUTPUT_DIR (if there is one; "
                             "otherwise start from MODEL.WEIGHTS)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS on DATASETS.TEST and print the AP table")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine: one per GPU, or that many CPU processes without CUDA "
                             "(default 1)")
    parser.add_argument("--num-machines", type=int, default=1, help="number of machines (default 1)")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's index, 0-based (default 0)")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL of rank 0, e.g. tcp://10.0.0.1:23456; 'auto' picks a free local "
                             "port (one machine only; default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides at the end of the command: KEY VALUE pairs, e.g. "
                             "SOLVER.BASE_LR 0.01 DATASETS.TEST \"('coco_mini_val',)\"")


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers `train` on an argparse subparsers object; `args.func(args)` then runs it."""
    parser = subparsers.add_parser("train", help="train or evaluate a model from a config",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run_train)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A parser for the train arguments alone (prog "mrcnn train")."""
    parser = argparse.ArgumentParser(prog="mrcnn train", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return parser


# ----------------------------------------------------------------------------- per-process setup


def seed_all_rng(seed: int) -> None:
    """Seeds python's, numpy's and torch's generators (all devices)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    # For subprocesses this run starts (hash randomisation of this process is already fixed).
    os.environ["PYTHONHASHSEED"] = str(seed)


def _shared_random_seed() -> int:
    """A fresh seed from the OS, rank 0's on every process."""
    seed = int.from_bytes(os.urandom(4), "little") % 2 ** 31
    return int(all_gather_objects(seed)[0])


class _ConsoleFilter(logging.Filter):
    """What the console shows: rank 0's records, other processes' from WARNING up, and no periodic
    training line that the terminal's progress bar already shows (those still go to log.txt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .trainer import PROGRESS_BAR_SHOWS_IT

        if getattr(record, PROGRESS_BAR_SHOWS_IT, False):
            return False
        return is_main_process() or record.levelno >= logging.WARNING


def setup_logging(output_dir: str) -> None:
    """INFO logs of the `mrcnn_plugin` package to stderr (rank 0; other ranks warnings only) and to
    OUTPUT_DIR/log.txt (log.txt.rank<r> on other ranks). Calling it again replaces the handlers."""
    package_logger = logging.getLogger("mrcnn_plugin")
    for handler in [h for h in package_logger.handlers if getattr(h, _HANDLER_TAG, False)]:
        package_logger.removeHandler(handler)
        handler.close()
    package_logger.setLevel(logging.INFO)
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_ConsoleFilter())
    handlers: List[logging.Handler] = [console]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = "log.txt" if get_rank() == 0 else f"log.txt.rank{get_rank()}"
        handlers.append(logging.FileHandler(os.path.join(output_dir, name), encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        setattr(handler, _HANDLER_TAG, True)
        package_logger.addHandler(handler)
    # Our handlers print the records; the root logger printing them too would double every line.
    package_logger.propagate = False


def _check_device(cfg) -> None:
    if torch.device(cfg.MODEL.DEVICE).type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available on this machine; "
                         "add `MODEL.DEVICE cpu` to the command")


def _write_config(cfg, output_dir: str) -> str:
    from ..checkpoint import atomic_write

    path = os.path.join(output_dir, "config.yaml")
    text = cfg.dump()
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def setup(config_file: str, opts: List[str]):
    """The config of this process (file + overrides, seed resolved), with generators seeded, logging
    set up and OUTPUT_DIR/config.yaml written (rank 0)."""
    from ..config import get_cfg

    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    _check_device(cfg)
    if cfg.SEED < 0:
        cfg.SEED = _shared_random_seed()
    cfg.freeze()
    setup_logging(cfg.OUTPUT_DIR)
    seed_all_rng(cfg.SEED + get_rank())
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    logger.info("Process %d of %d; torch %s; config file %s; seed %d (+ rank)", get_rank(), get_world_size(),
                torch.__version__, config_file or "(none)", cfg.SEED)
    if is_main_process() and cfg.OUTPUT_DIR:
        logger.info("Full config written to %s:\n%s", _write_config(cfg, cfg.OUTPUT_DIR), cfg.dump())
    return cfg


# ----------------------------------------------------------------------------- the command


def _evaluate_only(cfg, resume: bool) -> Dict[str, Any]:
    """Loads MODEL.WEIGHTS (or with resume, OUTPUT_DIR's newest checkpoint) and evaluates on DATASETS.TEST,
    also with test-time augmentation when TEST.AUG.ENABLED."""
    from ..evaluation import format_ap_table
    from .checkpointing import load_newest_complete_checkpoint, make_checkpointer
    from .trainer import Trainer

    if not cfg.DATASETS.TEST:
        raise ValueError("--eval-only needs datasets to evaluate on: DATASETS.TEST is empty")
    model = Trainer.build_model(cfg)
    checkpointer = make_checkpointer(model, cfg.OUTPUT_DIR, save_to_disk=False)
    if not (resume and load_newest_complete_checkpoint(checkpointer, cfg.OUTPUT_DIR)):
        if not cfg.MODEL.WEIGHTS:
            logger.warning("MODEL.WEIGHTS is empty: evaluating a randomly initialised model")
        checkpointer.load(cfg.MODEL.WEIGHTS)
    results = Trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        results = {**results, **Trainer.test_with_TTA(cfg, model)}
    if is_main_process():
        per_dataset = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
        for name, dataset_results in per_dataset.items():
            print(f"{name}:\n{format_ap_table(dataset_results)}", flush=True)
    return results


def _worker(options: Dict[str, Any]) -> Dict[str, Any]:
    """What every process runs: set up, then evaluate or train."""
    from .trainer import Trainer

    cfg = setup(options["config_file"], options["opts"])
    if options["eval_only"]:
        return _evaluate_only(cfg, options["resume"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=options["resume"])
    return trainer.train()


def run_train(args: argparse.Namespace) -> int:
    """Runs parsed `train` arguments on the requested processes; returns the exit status."""
    options = {"config_file": args.config_file, "opts": list(args.opts or []), "eval_only": args.eval_only,
               "resume": args.resume}
    launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(options,))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """`mrcnn train` on its own: argv are its arguments (a leading "train" is accepted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        argv = argv[1:]
    return run_train(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
