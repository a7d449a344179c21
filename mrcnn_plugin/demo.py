"""The `mrcnn demo` command: run a model on images and save pictures of its detections.

    mrcnn demo --config-file F --input IMAGES... --output DIR [--confidence-threshold T] [--no-fast] [KEY VALUE ...]
    mrcnn demo --model-ts DIR/model.ts --input IMAGES... --output DIR [--confidence-threshold T]

With --config-file the model is built from the config (defaults + F + overrides)
and MODEL.WEIGHTS is loaded when set; each image is read in INPUT.FORMAT, resized
like detectron2's DefaultPredictor (short side INPUT.MIN_SIZE_TEST, long side at
most INPUT.MAX_SIZE_TEST, PIL bilinear) and the detections come back at its
original size. Class names are those of DATASETS.TEST[0] ("class_<i>" without).
With --model-ts an exported model (`mrcnn export`) does all of that itself and
brings its class names in its metadata.

Each input (a file, a folder, whose .jpg/.jpeg/.png files are taken, or a glob
pattern) gives DIR/<stem>.png and one printed line. An unreadable input is
reported by name and skipped; the exit code is then 1.

`add_demo_parser(subparsers)` registers the subcommand on the `mrcnn` parser;
`main(argv)` runs it on its own (argv without the word "demo").
"""
import argparse
import glob
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

# The drawing code (matplotlib) and the model are imported when a demo runs, not when the
# `mrcnn` parser registers this subcommand, so the other subcommands start no slower.

__all__ = ["add_demo_parser", "main", "run_demo", "build_parser", "expand_inputs", "Predictor", "config_predictor",
           "exported_predictor", "DESCRIPTION"]

logger = logging.getLogger(__name__)

DESCRIPTION = """Run a model on images and write DIR/<stem>.png pictures of the detections
(translucent masks, boxes, "class 97%" labels, keypoints).

--input takes files, folders (their .jpg/.jpeg/.png files) and glob patterns
(quote them to let the command expand them). Config overrides (KEY VALUE ...)
come last, after --output or another option.

examples:
  mrcnn demo --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml \\
      --input photos/ --output out/ MODEL.WEIGHTS model_final.pth
  mrcnn demo --model-ts export/model.ts --input 'photos/*.jpg' --output out/ --confidence-threshold 0.7
"""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_GLOB_CHARS = re.compile(r"[*?\[]")
# A config key such as MODEL.WEIGHTS: how an override that argparse swept into --input is recognised.
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


# ----------------------------------------------------------------------------- arguments


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", metavar="FILE", help="a YAML config; MODEL.WEIGHTS gives the weights")
    source.add_argument("--model-ts", metavar="PATH",
                        help="an exported model.ts (mrcnn export) instead of a config; it carries its class names")
    parser.add_argument("--input", nargs="+", required=True, metavar="IMAGE",
                        help="image files, folders (their .jpg/.jpeg/.png files) or glob patterns")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the <stem>.png pictures")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="T",
                        help="draw and count detections with score >= T (default 0.5)")
    parser.add_argument("--no-fast", action="store_true",
                        help="with --config-file: run the model as built, not the fast inference mode "
                             "(folded norms, channels-last; it changes results by float rounding only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides at the end of the command: KEY VALUE pairs (with --config-file)")


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers `demo` on an argparse subparsers object; `args.func(args)` then runs it."""
    parser = subparsers.add_parser("demo", help="draw a model's detections on images",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run_demo)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A parser for the demo arguments alone (prog "mrcnn demo")."""
    parser = argparse.ArgumentParser(prog="mrcnn demo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return parser


def _split_overrides(inputs: List[str], opts: List[str]) -> Tuple[List[str], List[str]]:
    """(inputs, overrides), moving overrides that followed --input directly (argparse's nargs="+"
    swallows them) to the overrides: from the first word that looks like a config key and is not a file."""
    for i, item in enumerate(inputs):
        if _CONFIG_KEY.match(item) and not os.path.exists(item):
            return inputs[:i], inputs[i:] + list(opts)
    return inputs, list(opts)


# ----------------------------------------------------------------------------- inputs


def _images_in_folder(folder: str) -> List[str]:
    """The folder's image files (not its subfolders'), sorted by name."""
    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names
            if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, n))]


def expand_inputs(items: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(image paths, problems): folders and glob patterns expanded, duplicates dropped, order kept.

    A plain path is passed through even when it does not exist, so that reading it
    reports the problem by name; a folder or pattern that yields no image is a problem.
    """
    paths: List[str] = []
    problems: List[str] = []
    for item in items:
        if os.path.isdir(item):
            found = _images_in_folder(item)
            if not found:
                problems.append(f"{item}: folder has no {'/'.join(IMAGE_SUFFIXES)} files")
        elif _GLOB_CHARS.search(item) and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                problems.append(f"{item}: no file matches this pattern")
        else:
            found = [item]
        paths.extend(p for p in found if p not in paths)
    return paths, problems


def _output_paths(inputs: Sequence[str], output_dir: str) -> Dict[str, Path]:
    """input -> DIR/<stem>.png; a stem met before gets _2, _3, ... so no picture overwrites another."""
    used: Dict[str, int] = {}
    result: Dict[str, Path] = {}
    for path in inputs:
        stem = Path(path).stem
        count = used.get(stem, 0) + 1
        used[stem] = count
        name = stem if count == 1 else f"{stem}_{count}"
        result[path] = Path(output_dir) / f"{name}.png"
    return result


# ----------------------------------------------------------------------------- predictors


@dataclass
class Predictor:
    """What the demo needs from a model, whichever way it was loaded.

    predict: HxWxC uint8 image in `input_format` -> dict of numpy arrays
    boxes [N, 4], scores [N], classes [N], and optionally masks [N, H, W] bool and
    keypoints [N, K, 3], at the image's size.
    """

    predict: Callable[[np.ndarray], Dict[str, np.ndarray]]
    input_format: str
    class_names: List[str]
    skeleton: List[Tuple[int, int]] = field(default_factory=list)


def _numpy_outputs(result: Dict[str, torch.Tensor], names: Dict[str, str]) -> Dict[str, np.ndarray]:
    """Renames a model's output tensors (names: model key -> demo key) and moves them to numpy."""
    out: Dict[str, np.ndarray] = {}
    for src, dst in names.items():
        if src in result:
            out[dst] = result[src].detach().cpu().numpy()
    if "masks" in out:
        out["masks"] = out["masks"].astype(bool)
    return out


def _load_cfg(config_file: str, opts: List[str]):
    from .config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(opts)
    return cfg


def _names_from_catalog(cfg) -> Tuple[List[str], List[Tuple[int, int]]]:
    """(class names, skeleton index pairs) from DATASETS.TEST[0]'s metadata, generic names without it."""
    num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    classes: List[str] = []
    skeleton: List[Tuple[int, int]] = []
    if len(cfg.DATASETS.TEST):
        from .data import MetadataCatalog
        from .utils.visualizer import skeleton_from_names

        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        classes = list(meta.get("thing_classes", None) or [])
        keypoint_names = meta.get("keypoint_names", None)
        rules = meta.get("keypoint_connection_rules", None)
        if cfg.MODEL.KEYPOINT_ON and keypoint_names and rules:
            skeleton = skeleton_from_names(keypoint_names, rules)
    if len(classes) != num_classes:
        if classes:
            logger.warning("DATASETS.TEST[0] has %d class names but the model %d classes; using class_<i>",
                           len(classes), num_classes)
        classes = [f"class_{i}" for i in range(num_classes)]
    return classes, skeleton


def config_predictor(cfg, fast: bool = True) -> Predictor:
    """A Predictor that builds the model from cfg and resizes like detectron2's DefaultPredictor.

    fast: run the fast inference mode (prepare_for_inference: norms folded into
    the convolutions, channels-last), which changes results by float rounding only.
    """
    from .data.transforms import ResizeShortestEdge
    from .modeling import build_model
    from .modeling.fast_inference import prepare_for_inference

    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        # Imported here: the checkpoint package is heavier and only needed with weights.
        from .checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if fast:
        from .modeling.inference_plan import sample_for_sizes

        # The plan is measured (once per machine, then cached) at the config's test size.
        model = prepare_for_inference(model, sample=sample_for_sizes(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
    resize = ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, sample_style="choice")
    names = {"pred_boxes": "boxes", "scores": "scores", "pred_classes": "classes",
             "pred_masks": "masks", "pred_keypoints": "keypoints"}

    def predict(image: np.ndarray) -> Dict[str, np.ndarray]:
        height, width = image.shape[:2]
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        with torch.no_grad():
            result = model.inference([{"image": tensor, "height": height, "width": width}])[0]
        return _numpy_outputs(result, names)

    classes, skeleton = _names_from_catalog(cfg)
    return Predictor(predict, cfg.INPUT.FORMAT, classes, skeleton)


def exported_predictor(path: str) -> Predictor:
    """A Predictor running an exported model.ts, which resizes inside; names come from its metadata."""
    from .export import load_exported
    from .utils.visualizer import skeleton_from_names

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Exported model {path!r} does not exist")
    module, meta = load_exported(path)
    names = {"boxes": "boxes", "scores": "scores", "classes": "classes", "masks": "masks", "keypoints": "keypoints"}

    def predict(image: np.ndarray) -> Dict[str, np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        with torch.no_grad():
            return _numpy_outputs(module([tensor])[0], names)

    keypoint_names = meta.get("keypoint_names") or []
    rules = meta.get("keypoint_skeleton") or []
    skeleton = skeleton_from_names(keypoint_names, rules) if keypoint_names and rules else []
    return Predictor(predict, meta["input"]["format"], list(meta.get("classes") or []), skeleton)


# ----------------------------------------------------------------------------- running


def _to_rgb(image: np.ndarray, input_format: str) -> np.ndarray:
    """The image read in the model's format, as RGB for drawing."""
    if input_format == "BGR":
        return np.ascontiguousarray(image[:, :, ::-1])
    if input_format == "L":
        return np.repeat(image, 3, axis=2)
    return image


def _process_one(predictor: Predictor, path: str, output: Path, threshold: float) -> str:
    """Reads, predicts, draws and saves one image; returns its report line. Read errors propagate."""
    from .data import read_image
    from .utils import visualizer

    start = time.perf_counter()
    image = read_image(path, format=predictor.input_format)
    result = predictor.predict(image)
    elapsed = time.perf_counter() - start
    scores = result["scores"]
    picture = visualizer.draw_instances(
        _to_rgb(image, predictor.input_format), result["boxes"], scores, result["classes"], predictor.class_names,
        masks=result.get("masks"), keypoints=result.get("keypoints"), skeleton=predictor.skeleton,
        score_threshold=threshold)
    visualizer.save_image(picture, output)
    shown = int((scores >= threshold).sum())
    return f"{path}: {shown} detections with score >= {threshold:g} in {elapsed:.2f} s -> {output}"


def _make_predictor(args: argparse.Namespace, opts: List[str]) -> Predictor:
    if args.model_ts:
        if opts:
            raise ValueError(f"Config overrides {opts} do not apply to --model-ts (the exported model is fixed)")
        return exported_predictor(args.model_ts)
    return config_predictor(_load_cfg(args.config_file, opts), fast=not args.no_fast)


def run_demo(args: argparse.Namespace) -> int:
    """Runs the demo for parsed arguments; returns the exit code (1 when any input failed)."""
    inputs, opts = _split_overrides(list(args.input), list(args.opts or []))
    paths, problems = expand_inputs(inputs)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    predictor = _make_predictor(args, opts)
    outputs = _output_paths(paths, args.output)
    failed = list(problems)
    for path in paths:
        try:
            line = _process_one(predictor, path, outputs[path], args.confidence_threshold)
        except OSError as e:  # missing, empty, truncated or non-image files (read_image names them)
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            failed.append(f"{path}: {e}")
            continue
        print(line, flush=True)
    if failed:
        print(f"{len(failed)} input(s) failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """`mrcnn demo` on its own: argv holds the demo's arguments (without "demo")."""
    args = build_parser().parse_args(argv)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
