"""Offline conversion of weight files into this package's (detectron2's) names.

    convert_torchvision("maskrcnn_resnet50_fpn_coco.pth", "mask_rcnn_tv.pth", "mask_rcnn")
    convert_detectron("model_final.pkl", "model_final_d2.pth")      # Caffe2 Detectron blobs
    convert_detectron2("model_final_f10217.pkl", "model_final.pth")  # model-zoo .pkl <-> .pth

The output format follows the output's extension: `.pth` ({"model": state_dict},
torch.save) or `.pkl` (a detectron2 model-zoo pickle). Files are written
atomically. Each function returns the converted state_dict.
"""
import logging
from typing import Dict, Optional

import torch
from torch import Tensor

from .formats import (PICKLE_EXTENSIONS, CheckpointError, read_checkpoint, save_model_zoo_pkl, save_pth)
from .torchvision_names import (CLASSIFIER_BN_EPS, DETECTION_BN_EPS, TORCHVISION_KINDS, is_torchvision_detection,
                                is_torchvision_resnet, torchvision_detection_to_detectron2,
                                torchvision_resnet_to_detectron2)

__all__ = ["convert_torchvision", "convert_detectron", "convert_detectron2", "convert_checkpoint", "SOURCES"]

logger = logging.getLogger(__name__)

SOURCES = ("torchvision", "detectron2", "detectron")

# Names torchvision gives its builders, accepted as kinds too.
_KIND_ALIASES = {"maskrcnn_resnet50_fpn": "mask_rcnn", "keypointrcnn_resnet50_fpn": "keypoint_rcnn",
                 "fasterrcnn_resnet50_fpn": "faster_rcnn"}


def _write(state_dict: Dict[str, Tensor], out_path: str, author: str, matching_heuristics: bool) -> None:
    """Writes by extension; a .pth records whether its names need suffix matching."""
    if out_path.lower().endswith(PICKLE_EXTENSIONS):
        save_model_zoo_pkl(state_dict, out_path, author=author)
    else:
        extra = {"__author__": author}
        if matching_heuristics:
            extra["matching_heuristics"] = True
        save_pth(state_dict, out_path, **extra)
    logger.info("Wrote %d tensors to %s", len(state_dict), out_path)


def _has_bare_names(state_dict: Dict[str, Tensor]) -> bool:
    """Whether names lack a whole model's prefixes (a backbone-only file): they need suffix matching."""
    return not any(k.startswith(("backbone.", "roi_heads.", "proposal_generator.")) for k in state_dict)


def _read_torchvision(in_path: str) -> Dict[str, Tensor]:
    """A torchvision state_dict, bare or under "model" (torchvision's reference training scripts)."""
    try:
        obj = torch.load(in_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"Checkpoint file {in_path} does not exist") from None
    except Exception as e:  # torch raises many types for a non-checkpoint: name the file whatever it is
        raise CheckpointError(f"{in_path}: not a readable PyTorch checkpoint: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{in_path}: not a torchvision state_dict (a dict of tensors)")
    return obj


def convert_torchvision(in_path: str, out_path: str, kind: str, bn_eps: Optional[float] = None
                        ) -> Dict[str, Tensor]:
    """Converts a torchvision checkpoint into detectron2 names (see torchvision_names).

    kind: "mask_rcnn", "keypoint_rcnn", "faster_rcnn" (the `*_resnet50_fpn`
    detection models; torchvision's builder names are accepted too) or "resnet"
    (an ImageNet classifier, for backbone initialisation). The file must hold
    what `kind` names, otherwise it is a ValueError saying what is missing. Use
    the converted detection weights with configs/torchvision/*.yaml.
    bn_eps: the batch-norm eps the weights ran with in torchvision. None: what
    torchvision uses with its released weights of that kind, 0.0 for detection
    models (COCO_V1, after torchvision's overwrite_eps) and 1e-5 for classifiers.
    Pass 1e-5 for a detection model built and trained without those weights.
    """
    kind = _KIND_ALIASES.get(kind, kind)
    if kind not in TORCHVISION_KINDS:
        raise ValueError(f"Unknown torchvision kind {kind!r}; expected one of {sorted(TORCHVISION_KINDS)}")
    state_dict = _read_torchvision(in_path)
    absent = [k for k in TORCHVISION_KINDS[kind] if k not in state_dict]
    if absent:
        raise ValueError(f"{in_path} is not a torchvision {kind} state_dict: it has no {', '.join(absent)}")
    if kind == "resnet":
        if not is_torchvision_resnet(state_dict):
            raise ValueError(f"{in_path} is not a torchvision ResNet state_dict")
        converted = torchvision_resnet_to_detectron2(state_dict, CLASSIFIER_BN_EPS if bn_eps is None else bn_eps)
        _write(converted, out_path, "torchvision", matching_heuristics=True)
        return converted
    if not is_torchvision_detection(state_dict):
        raise ValueError(f"{in_path} is not a torchvision R-CNN state_dict (no backbone.body / rpn.head keys)")
    converted = torchvision_detection_to_detectron2(state_dict, DETECTION_BN_EPS if bn_eps is None else bn_eps)
    _write(converted, out_path, "torchvision", matching_heuristics=False)
    return converted


def convert_detectron(in_path: str, out_path: str) -> Dict[str, Tensor]:
    """Converts a Caffe2 Detectron `.pkl` (detection model or MSRA ImageNet backbone) into detectron2
    names and class layout (see detectron_names)."""
    checkpoint = read_checkpoint(in_path)
    if checkpoint["format"] != "detectron_pkl":
        raise ValueError(f"{in_path} is not a Detectron (Caffe2) weights file but a {checkpoint['format']} "
                         "file; use the matching source")
    _write(checkpoint["model"], out_path, "Detectron (converted)", _has_bare_names(checkpoint["model"]))
    return checkpoint["model"]


def convert_detectron2(in_path: str, out_path: str) -> Dict[str, Tensor]:
    """Rewrites a detectron2 checkpoint (`.pth`, or model-zoo `.pkl`) in the format of `out_path`.

    Only the model's weights are kept (a training checkpoint's optimizer and
    scheduler state are dropped).
    """
    checkpoint = read_checkpoint(in_path)
    if checkpoint["format"] not in ("pth", "detectron2_pkl"):
        raise ValueError(f"{in_path} is not a detectron2 checkpoint but a {checkpoint['format']} file; "
                         "use the matching source")
    author = checkpoint.get("__author__") or "detectron2"
    _write(checkpoint["model"], out_path, str(author), _has_bare_names(checkpoint["model"]))
    return checkpoint["model"]


def convert_checkpoint(source: str, in_path: str, out_path: str, kind: Optional[str] = None,
                       bn_eps: Optional[float] = None) -> Dict[str, Tensor]:
    """One entry point for `mrcnn convert --from SOURCE IN OUT [--kind KIND] [--bn-eps EPS]`."""
    if source == "torchvision":
        if kind is None:
            raise ValueError("--kind is required with --from torchvision "
                             f"(one of {sorted(TORCHVISION_KINDS)})")
        return convert_torchvision(in_path, out_path, kind, bn_eps)
    if kind is not None or bn_eps is not None:
        raise ValueError(f"--kind and --bn-eps only apply to --from torchvision, not {source}")
    if source == "detectron":
        return convert_detectron(in_path, out_path)
    if source == "detectron2":
        return convert_detectron2(in_path, out_path)
    raise ValueError(f"Unknown source {source!r}; expected one of {', '.join(SOURCES)}")
