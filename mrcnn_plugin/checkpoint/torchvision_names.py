"""torchvision state_dicts -> detectron2 parameter names.

Two kinds of torchvision weights are understood:

* detection models `maskrcnn_resnet50_fpn`, `keypointrcnn_resnet50_fpn` (and
  `fasterrcnn_resnet50_fpn`, their common part), in the current key layout and
  in the older one that torchvision still upgrades when loading (its modules
  with `_version = 2`: FeaturePyramidNetwork `inner_blocks.{i}.weight` ->
  `inner_blocks.{i}.0.weight`, RPNHead `conv.weight` -> `conv.0.0.weight`,
  MaskRCNNHeads `mask_fcn{i+1}.weight` -> `{i}.0.weight`). Both layouts are
  recognised by key, whatever the state_dict's metadata says.
* ImageNet classifiers `resnet18/34/50/101/152`, `resnext*` (`conv1.weight`,
  `bn1.*`, `layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, `fc.*`):
  renamed to bare detectron2 ResNet names (`stem.conv1.weight`,
  `res2.0.conv1.weight`, ...), which DetectionCheckpointer matches to a
  model's backbone by unique suffix. `fc.*` keeps its name (no counterpart).
  Such weights expect what torchvision's ImageNet training used: RGB input,
  ImageNet mean/std, i.e. in this package's 0-255 units
  MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], MODEL.PIXEL_STD
  [58.395, 57.12, 57.375], INPUT.FORMAT "RGB", and the stride of a bottleneck
  block in its 3x3 convolution: MODEL.RESNETS.STRIDE_IN_1X1 False.

Batch-norm eps: this package's FrozenBatchNorm2d uses eps 1e-5, as torchvision's
does by default. But torchvision runs its released COCO detection weights
(MaskRCNN_ResNet50_FPN_Weights.COCO_V1, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
FasterRCNN_ResNet50_FPN_Weights.COCO_V1) with eps 0: its builders call
`overwrite_eps(model, 0.0)` after loading them, for compatibility with how they
were trained. The conversion takes the eps the weights ran with (`bn_eps`) and
stores running_var + (bn_eps - 1e-5), so that a norm with eps 1e-5 computes
weight / sqrt(running_var + bn_eps) exactly as torchvision did (up to float32
rounding of the shifted variance). Default: 0.0 for detection models (the
released weights), 1e-5 for ImageNet classifiers (nn.BatchNorm2d's eps).

Class layout: torchvision's predictors put background in row / channel 0;
detectron2's `cls_score` has it last, and its `bbox_pred` and mask predictor
have none. So `cls_score` rows rotate (0 goes last) and the first 4
`bbox_pred` rows and the first mask channel are dropped. A COCO model's 91
torchvision labels (COCO category ids, background 0) become 90 classes here:
class i is torchvision label i + 1.
"""
import re
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from .detectron_names import FROZEN_BN_EPS

__all__ = ["torchvision_detection_to_detectron2", "torchvision_resnet_to_detectron2", "is_torchvision_detection",
           "is_torchvision_resnet", "TORCHVISION_KINDS", "DETECTION_BN_EPS", "CLASSIFIER_BN_EPS"]

# The batch-norm eps torchvision runs each kind of released weights with (module docstring).
DETECTION_BN_EPS = 0.0
CLASSIFIER_BN_EPS = 1e-5

# What each kind of detection state_dict must contain.
TORCHVISION_KINDS = {
    "faster_rcnn": ("roi_heads.box_predictor.cls_score.weight",),
    "mask_rcnn": ("roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight"),
    "keypoint_rcnn": ("roi_heads.box_predictor.cls_score.weight",
                      "roi_heads.keypoint_predictor.kps_score_lowres.weight"),
    "resnet": ("conv1.weight", "layer1.0.conv1.weight"),
}

_BN = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def _resnet_body(name: str) -> Optional[str]:
    """A torchvision ResNet key (without prefix) -> detectron2 ResNet key (without prefix), or None.

    conv1 -> stem.conv1, bn1 -> stem.conv1.norm, layer{L}.{b}.conv{i} -> res{L+1}.{b}.conv{i},
    bn{i} -> conv{i}.norm, downsample.0 -> shortcut, downsample.1 -> shortcut.norm.
    """
    m = re.fullmatch(r"conv1\.weight", name)
    if m:
        return "stem.conv1.weight"
    m = re.fullmatch(r"bn1\.(\w+)", name)
    if m and m.group(1) in _BN:
        return f"stem.conv1.norm.{_BN[m.group(1)]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name)
    if not m:
        return None
    prefix = f"res{int(m.group(1)) + 1}.{m.group(2)}."
    rest = m.group(3)
    m = re.fullmatch(r"conv(\d)\.weight", rest)
    if m:
        return f"{prefix}conv{m.group(1)}.weight"
    m = re.fullmatch(r"bn(\d)\.(\w+)", rest)
    if m and m.group(2) in _BN:
        return f"{prefix}conv{m.group(1)}.norm.{_BN[m.group(2)]}"
    if rest == "downsample.0.weight":
        return f"{prefix}shortcut.weight"
    m = re.fullmatch(r"downsample\.1\.(\w+)", rest)
    if m and m.group(1) in _BN:
        return f"{prefix}shortcut.norm.{_BN[m.group(1)]}"
    return None


def _detection_key(name: str) -> Optional[str]:
    """A torchvision detection key (either layout) -> detectron2 key, or None."""
    if name.startswith("backbone.body."):
        body = _resnet_body(name[len("backbone.body."):])
        return None if body is None else "backbone.bottom_up." + body
    # FPN: inner_blocks / layer_blocks i serve layer{i+1}, i.e. res{i+2}.
    m = re.fullmatch(r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)(?:\.0)?\.(weight|bias)", name)
    if m:
        kind = "lateral" if m.group(1) == "inner" else "output"
        return f"backbone.fpn_{kind}{int(m.group(2)) + 2}.{m.group(3)}"
    m = re.fullmatch(r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)", name)
    if m:
        return f"proposal_generator.rpn_head.conv.{m.group(1)}"
    m = re.fullmatch(r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)", name)
    if m:
        module = "objectness_logits" if m.group(1) == "cls_logits" else "anchor_deltas"
        return f"proposal_generator.rpn_head.{module}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_head\.fc([67])\.(weight|bias)", name)
    if m:
        return f"roi_heads.box_head.fc{int(m.group(1)) - 5}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", name)
    if m:
        return name
    m = re.fullmatch(r"roi_heads\.mask_head\.(?:(\d+)\.0|mask_fcn(\d+))\.(weight|bias)", name)
    if m:
        index = int(m.group(1)) + 1 if m.group(1) is not None else int(m.group(2))
        return f"roi_heads.mask_head.mask_fcn{index}.{m.group(3)}"
    m = re.fullmatch(r"roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.(weight|bias)", name)
    if m:
        module = "deconv" if m.group(1) == "conv5_mask" else "predictor"
        return f"roi_heads.mask_head.{module}.{m.group(2)}"
    # KeypointRCNNHeads is a Sequential of (Conv2d, ReLU) pairs: convs at even indices.
    m = re.fullmatch(r"roi_heads\.keypoint_head\.(\d+)\.(weight|bias)", name)
    if m and int(m.group(1)) % 2 == 0:
        return f"roi_heads.keypoint_head.conv_fcn{int(m.group(1)) // 2 + 1}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)", name)
    if m:
        return f"roi_heads.keypoint_head.score_lowres.{m.group(1)}"
    return None


def _background_last(key: str, value: Tensor) -> Tensor:
    """torchvision's background-first predictor outputs -> detectron2's layout (module docstring)."""
    if key.startswith("roi_heads.box_predictor.cls_score."):
        return torch.cat([value[1:], value[:1]], dim=0)
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return value[4:]
    if key.startswith("roi_heads.mask_head.predictor."):
        return value[1:]
    return value


def _convert(state_dict: Mapping[str, Tensor], rename: Callable[[str], Optional[str]],
             what: str) -> Tuple[Dict[str, Tensor], List[str]]:
    """Renames every tensor; step counters are dropped. Returns (converted, keys without a name)."""
    out: Dict[str, Tensor] = {}
    unknown: List[str] = []
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter: no meaning for frozen statistics
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key in out:
            raise ValueError(f"{what}: two keys map to {new_key!r} (is the state_dict mixing layouts?)")
        out[new_key] = _background_last(new_key, value)
    return out, unknown


def is_torchvision_detection(state_dict: Mapping[str, object]) -> bool:
    """Whether the keys look like a torchvision R-CNN (`backbone.body.*`, `rpn.head.*`)."""
    return any(k.startswith("backbone.body.") for k in state_dict) and any(k.startswith("rpn.head.")
                                                                           for k in state_dict)


def is_torchvision_resnet(state_dict: Mapping[str, object]) -> bool:
    """Whether the keys look like a torchvision ImageNet ResNet (`conv1.weight`, `layer1.0.*`)."""
    return all(k in state_dict for k in TORCHVISION_KINDS["resnet"])


def _shift_variances(state_dict: Dict[str, Tensor], bn_eps: float) -> None:
    """running_var += bn_eps - 1e-5, in place: a FrozenBatchNorm2d with eps 1e-5 then divides by
    sqrt(running_var + bn_eps), as torchvision did with eps `bn_eps`."""
    shift = bn_eps - FROZEN_BN_EPS
    if shift == 0.0:
        return
    for key in state_dict:
        if key.endswith("norm.running_var"):
            state_dict[key] = state_dict[key] + shift


def torchvision_detection_to_detectron2(state_dict: Mapping[str, Tensor],
                                        bn_eps: float = DETECTION_BN_EPS) -> Dict[str, Tensor]:
    """A torchvision Faster / Mask / Keypoint R-CNN R50-FPN state_dict in detectron2's names and layout.

    bn_eps: the eps its frozen batch norms ran with (module docstring; 0.0 for
    torchvision's released COCO weights). Any key without a counterpart is a
    ValueError listing them all (e.g. a different backbone or a deeper RPN head,
    which are not supported).
    """
    out, unknown = _convert(state_dict, _detection_key, "torchvision detection state_dict")
    if unknown:
        raise ValueError("torchvision keys without a detectron2 counterpart: " + ", ".join(unknown))
    _shift_variances(out, bn_eps)
    return out


def torchvision_resnet_to_detectron2(state_dict: Mapping[str, Tensor],
                                     bn_eps: float = CLASSIFIER_BN_EPS) -> Dict[str, Tensor]:
    """A torchvision ImageNet ResNet state_dict in bare detectron2 ResNet names (module docstring).

    bn_eps: the eps its batch norms ran with (1e-5 for torchvision's classifiers).
    Keys without a counterpart (the classifier `fc.*`) keep their name, so a
    loader reports them as unused.
    """
    out, unknown = _convert(state_dict, _resnet_body, "torchvision ResNet state_dict")
    _shift_variances(out, bn_eps)
    for key in unknown:
        out[key] = state_dict[key]
    return out
