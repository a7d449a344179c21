"""Offline conversion of weight files into this package's (detectron2's) names.

    convert_torchvision("maskrcnn_resnet50_fpn_coco.pth", "mask_rcnn_tv.pth", "mask_rcnn")
    convert_detectron("model_final.pkl", "model_final_d2.pth")      # Caffe2 Detectron blobs
    convert_detectron2("model_final_f10217.pkl", "model_final.pth")  # model-zoo .pkl <-> .pth
    convert_checkpoint_remapped("detectron2", "model_final_f10217.pkl", "cityscapes_init.pth",
                                "coco-to-cityscapes")                # class rows: 80 COCO -> 8 Cityscapes

The output format follows the output's extension: `.pth` ({"model": state_dict},
torch.save) or `.pkl` (a detectron2 model-zoo pickle). Files are written
atomically. Each function returns the converted state_dict.
"""
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .formats import (PICKLE_EXTENSIONS, CheckpointError, read_checkpoint, save_model_zoo_pkl, save_pth)
from .torchvision_names import (CLASSIFIER_BN_EPS, DETECTION_BN_EPS, TORCHVISION_KINDS, is_torchvision_detection,
                                is_torchvision_resnet, torchvision_detection_to_detectron2,
                                torchvision_resnet_to_detectron2)

__all__ = ["convert_torchvision", "convert_detectron", "convert_detectron2", "convert_checkpoint", "SOURCES",
           "ClassRemap", "CLASS_REMAPS", "COCO_CLASS_FOR_CITYSCAPES", "class_remap", "remap_class_rows",
           "convert_checkpoint_remapped"]

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


# ----------------------------------------------------------------------------- class remapping
#
# Fine-tuning a detector on a new label set (COCO -> Cityscapes) can start its class-specific
# output rows from the matching classes of the source model instead of from random values. Three
# tensors have rows per class (detectron2's layout, background last):
#   roi_heads.box_predictor.cls_score    K + 1 rows (the K classes, then background)
#   roi_heads.box_predictor.bbox_pred    4 rows per class (4 in all when class-agnostic: kept)
#   roi_heads.mask_head.predictor        1 output channel per class (1 when class-agnostic: kept)
# Everything else (backbone, RPN, box and mask head convolutions / FCs, keypoint head) is class-free.


@dataclass(frozen=True)
class ClassRemap:
    """A label set's rows taken from another's: target class i starts from source class
    `source_index[i]` (contiguous indices, i.e. the order of each dataset's thing_classes)."""

    name: str
    source_classes: Tuple[str, ...]
    target_classes: Tuple[str, ...]
    source_index: Tuple[int, ...]

    def __post_init__(self):
        if len(self.source_index) != len(self.target_classes):
            raise ValueError(f"Class remap {self.name!r}: {len(self.target_classes)} target classes but "
                             f"{len(self.source_index)} source indices")
        bad = [i for i in self.source_index if not 0 <= i < len(self.source_classes)]
        if bad:
            raise ValueError(f"Class remap {self.name!r}: source indices {bad} are outside the "
                             f"{len(self.source_classes)} source classes")


# Cityscapes class -> the COCO class whose rows it starts from. COCO has no "rider": a rider is a
# person on a bicycle or motorcycle, so it starts from "person" (the Mask R-CNN paper, appendix,
# initialised it randomly; detectron2 initialises all 8 randomly). The other 7 have a COCO class of
# the same name.
COCO_CLASS_FOR_CITYSCAPES: Dict[str, str] = {
    "person": "person", "rider": "person", "car": "car", "truck": "truck", "bus": "bus",
    "train": "train", "motorcycle": "motorcycle", "bicycle": "bicycle",
}


def _coco_to_cityscapes() -> ClassRemap:
    """The 80 COCO classes (order of mrcnn_plugin.data's COCO metadata) -> the 8 Cityscapes instance
    classes (order of the cityscapes_fine_instance_seg_* metadata)."""
    from ..data.datasets.builtin_meta import COCO_CATEGORIES
    from ..data.datasets.cityscapes import CITYSCAPES_THING_CLASSES

    coco = tuple(name for _, name in COCO_CATEGORIES)
    cityscapes = tuple(CITYSCAPES_THING_CLASSES)
    return ClassRemap("coco-to-cityscapes", coco, cityscapes,
                      tuple(coco.index(COCO_CLASS_FOR_CITYSCAPES[c]) for c in cityscapes))


# Named remaps of `mrcnn convert --remap-classes NAME`.
CLASS_REMAPS: Dict[str, Callable[[], ClassRemap]] = {"coco-to-cityscapes": _coco_to_cityscapes}


def class_remap(name: str) -> ClassRemap:
    """The ClassRemap of a name in CLASS_REMAPS."""
    if name not in CLASS_REMAPS:
        raise ValueError(f"Unknown class remap {name!r}; expected one of {', '.join(sorted(CLASS_REMAPS))}")
    return CLASS_REMAPS[name]()


def _class_rows(key: str, rows: int, remap: ClassRemap) -> Optional[List[int]]:
    """Rows of `key` (first dimension `rows`) to keep, in order; None when the tensor is class-free
    or class-agnostic. Raises ValueError when its size does not fit the source classes."""
    num = len(remap.source_classes)
    index = list(remap.source_index)
    if key.endswith(("box_predictor.cls_score.weight", "box_predictor.cls_score.bias")):
        expected, new = num + 1, index + [num]  # background stays last
    elif key.endswith(("box_predictor.bbox_pred.weight", "box_predictor.bbox_pred.bias")):
        if rows == 4:
            return None  # class-agnostic regression (MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG)
        expected, new = 4 * num, [4 * i + j for i in index for j in range(4)]
    elif key.endswith(("mask_head.predictor.weight", "mask_head.predictor.bias")):
        if rows == 1:
            return None  # class-agnostic mask (MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK)
        expected, new = num, index
    else:
        return None
    if rows != expected:
        raise ValueError(f"{key} has {rows} rows; remap {remap.name!r} expects {expected} for its "
                         f"{num} source classes: the checkpoint is not a model of those classes")
    return new


def remap_class_rows(state_dict: Dict[str, Tensor], remap: ClassRemap) -> Dict[str, Tensor]:
    """A copy of `state_dict` whose class-specific rows (cls_score, bbox_pred, mask predictor) are
    those of `remap.target_classes`, each taken from its source class; other tensors are shared.

    Raises ValueError when the state_dict has no box predictor or its class rows do not match
    `remap.source_classes` (e.g. a checkpoint that was already remapped).
    """
    if not any(k.endswith("box_predictor.cls_score.weight") for k in state_dict):
        raise ValueError("The checkpoint has no roi_heads.box_predictor.cls_score: only a whole detection "
                         "model (not a backbone) has class rows to remap")
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        rows = _class_rows(key, int(value.shape[0]) if value.dim() else 0, remap)
        out[key] = value if rows is None else value.index_select(0, torch.tensor(rows)).clone()
    return out


def convert_checkpoint_remapped(source: str, in_path: str, out_path: str, remap: Union[str, ClassRemap],
                                kind: Optional[str] = None, bn_eps: Optional[float] = None
                                ) -> Dict[str, Tensor]:
    """`convert_checkpoint`, then the class rows remapped (remap_class_rows): what
    `mrcnn convert --from SOURCE --remap-classes NAME IN OUT` runs.

    The conversion goes to a temporary file beside OUT, so OUT is written once, only when both
    steps succeed. Returns the remapped state_dict.
    """
    remap = class_remap(remap) if isinstance(remap, str) else remap
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"Output folder {out_dir} does not exist")
    with tempfile.TemporaryDirectory(prefix=".mrcnn_convert_", dir=out_dir) as tmp:
        converted = convert_checkpoint(source, in_path, os.path.join(tmp, "converted.pth"), kind, bn_eps)
    remapped = remap_class_rows(converted, remap)
    for target, i in zip(remap.target_classes, remap.source_index):
        logger.info("class %r <- %r", target, remap.source_classes[i])
    _write(remapped, out_path, f"mrcnn convert --remap-classes {remap.name}", _has_bare_names(remapped))
    return remapped
