"""Detectron (Caffe2) blob names <-> detectron2 parameter names, both directions.

Detectron stored weights as flat "blobs" named by layer and parameter, e.g.
`res2_0_branch2a_w`, `res2_0_branch2a_bn_s`, `fpn_inner_res5_2_sum_w`,
`conv_rpn_fpn2_w`, `fc6_w`, `cls_score_w`, `_[mask]_fcn1_w`, `kps_score_lowres_w`.
A name splits into a layer and a parameter suffix:

    suffix    parameter            suffix    parameter
    _w        weight               _bn_rm    norm.running_mean
    _b        bias                 _bn_riv   norm.running_var
    _bn_s     norm.weight (scale)  _gn_s     norm.weight (GroupNorm)
    _bn_b     norm.bias            _gn_b     norm.bias

Class layout: Detectron puts background first, detectron2 last. Converting,
`cls_score` rows rotate (row 0 goes last), `bbox_pred` loses its 4 background
rows and a class-specific `mask_fcn_logits` its background channel; writing
back, the background row is rotated to the front again and zero background
deltas / mask channel are prepended, so a round trip is exact.

Detectron's frozen batch norm is an affine transform (`_bn_s`, `_bn_b`) without
statistics. Reading, the statistics are filled in as mean 0 and variance
1 - eps (eps = 1e-5, FrozenBatchNorm2d's), which makes the frozen norm's scale
exactly `_bn_s`. Writing, detectron2's statistics are kept as `_bn_rm` / `_bn_riv`
(the names detectron2 itself reads as running mean / running variance).

Where the network sits in detectron2 depends on the architecture, so the
prefix of converted names follows what the blobs contain:
  - FPN detector (`fpn_*` blobs): ResNet under `backbone.bottom_up.`;
  - C4 detector (RPN or box-predictor blobs, no FPN): stem, res2-res4 under
    `backbone.`, res5 (which runs per ROI) under `roi_heads.`;
  - backbone only (an ImageNet classifier such as MSRA's R-50.pkl): bare names
    (`stem.conv1.weight`, `res2.0.conv1.weight`), which DetectionCheckpointer
    matches to the model by unique suffix.
"""
import logging
import re
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np

__all__ = ["detectron_to_detectron2", "detectron2_to_detectron", "FROZEN_BN_EPS"]

logger = logging.getLogger(__name__)

FROZEN_BN_EPS = 1e-5

# Blob suffix -> detectron2 parameter name, longest suffixes tried first.
_SUFFIX_TO_PARAM = {
    "bn_running_mean": "norm.running_mean", "bn_running_var": "norm.running_var",
    "bn_gamma": "norm.weight", "bn_beta": "norm.bias",
    "bn_rm": "norm.running_mean", "bn_riv": "norm.running_var",
    "bn_s": "norm.weight", "bn_b": "norm.bias", "gn_s": "norm.weight", "gn_b": "norm.bias",
    "w": "weight", "b": "bias",
}
_SPLIT = re.compile(r"^(?P<layer>.+?)_(?P<suffix>" + "|".join(
    sorted(map(re.escape, _SUFFIX_TO_PARAM), key=len, reverse=True)) + r")$")

# Blobs that are not weights of any detectron2 module: optimizer momentum, and
# Detectron's fixed bilinear upsampling of keypoint heatmaps (done by
# F.interpolate in the keypoint head here).
_DROPPED = re.compile(r"(_momentum$)|(^kps_score_[wb]$)")

_BRANCH_TO_MODULE = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_MODULE_TO_BRANCH = {v: k for k, v in _BRANCH_TO_MODULE.items()}


# -----------------------------------------------------------------------------
# Detectron -> detectron2
# -----------------------------------------------------------------------------
def _layout_prefixes(blob_names: Iterable[str]) -> Dict[str, str]:
    """Prefixes of the ResNet parts for the architecture the blobs describe (module docstring)."""
    names = list(blob_names)
    is_fpn = any(n.startswith("fpn_") for n in names)
    is_detector = is_fpn or any(n.startswith(("rpn_", "conv_rpn", "cls_score", "bbox_pred")) for n in names)
    if is_fpn:
        return {"stem": "backbone.bottom_up.", "res": "backbone.bottom_up.", "res5": "backbone.bottom_up."}
    if is_detector:
        return {"stem": "backbone.", "res": "backbone.", "res5": "roi_heads."}
    return {"stem": "", "res": "", "res5": ""}


def _layer_to_module(layer: str, prefixes: Mapping[str, str]) -> Optional[str]:
    """detectron2 module path of a Detectron layer name, or None when it has no counterpart."""
    if layer in ("conv1", "res_conv1"):
        return prefixes["stem"] + "stem.conv1"
    m = re.fullmatch(r"res(\d)_(\d+)_branch(1|2a|2b|2c)", layer)
    if m:
        stage = m.group(1)
        prefix = prefixes["res5"] if stage == "5" else prefixes["res"]
        return f"{prefix}res{stage}.{m.group(2)}.{_BRANCH_TO_MODULE[m.group(3)]}"
    m = re.fullmatch(r"fpn_inner_res(\d)_\d+_sum(_lateral)?", layer)
    if m:
        return f"backbone.fpn_lateral{m.group(1)}"
    m = re.fullmatch(r"fpn_res(\d)_\d+_sum", layer)
    if m:
        return f"backbone.fpn_output{m.group(1)}"
    # The RPN of an FPN model is defined on the lowest level (fpn2) and shared by the others.
    rpn = {"conv_rpn": "conv", "rpn_cls_logits": "objectness_logits", "rpn_bbox_pred": "anchor_deltas"}
    for blob, module in rpn.items():
        if layer in (blob, blob + "_fpn2"):
            return f"proposal_generator.rpn_head.{module}"
    m = re.fullmatch(r"fc([67])", layer)
    if m:
        return f"roi_heads.box_head.fc{int(m.group(1)) - 5}"
    m = re.fullmatch(r"head_conv(\d+)", layer)
    if m:
        return f"roi_heads.box_head.conv{m.group(1)}"
    if layer in ("cls_score", "bbox_pred"):
        return f"roi_heads.box_predictor.{layer}"
    m = re.fullmatch(r"(_\[mask\]_fcn|mask_fcn)(\d+)", layer)
    if m:
        return f"roi_heads.mask_head.mask_fcn{m.group(2)}"
    if layer == "conv5_mask":
        return "roi_heads.mask_head.deconv"
    if layer == "mask_fcn_logits":
        return "roi_heads.mask_head.predictor"
    m = re.fullmatch(r"conv_fcn(\d+)", layer)
    if m:
        return f"roi_heads.keypoint_head.conv_fcn{m.group(1)}"
    if layer == "kps_score_lowres":
        return "roi_heads.keypoint_head.score_lowres"
    return None


def _move_background_last(name: str, value: np.ndarray) -> np.ndarray:
    """Background-first Detectron predictor outputs -> detectron2's layout (see module docstring)."""
    if name.endswith("box_predictor.cls_score.weight") or name.endswith("box_predictor.cls_score.bias"):
        return np.concatenate([value[1:], value[:1]], axis=0)
    if name.endswith("box_predictor.bbox_pred.weight") or name.endswith("box_predictor.bbox_pred.bias"):
        return value[4:]
    if name.endswith("mask_head.predictor.weight") or name.endswith("mask_head.predictor.bias"):
        # A class-agnostic mask head has a single channel and no background.
        return value[1:] if value.shape[0] > 1 else value
    return value


def _add_affine_statistics(converted: Dict[str, np.ndarray], group_norms: Set[str]) -> None:
    """Frozen-norm statistics for Detectron's affine-only batch norm (see module docstring).

    group_norms: prefixes (`....norm.`) of GroupNorm layers, which have no statistics.
    """
    for name in list(converted):
        if not name.endswith("norm.weight"):
            continue
        base = name[: -len("weight")]
        if base not in group_norms and base + "running_mean" not in converted:
            scale = converted[name]
            converted[base + "running_mean"] = np.zeros_like(scale)
            converted[base + "running_var"] = np.full_like(scale, 1.0 - FROZEN_BN_EPS)


def detectron_to_detectron2(blobs: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Renames Detectron blobs to detectron2 parameters and fixes the class layout.

    blobs: blob name -> array. Returns (detectron2 name -> array, detectron2 name
    -> original blob name). Blobs without a detectron2 counterpart (e.g. an
    ImageNet classifier's `fc1000_w`) keep their original name, so a loader
    reports them as unexpected; momentum and fixed upsampling blobs are dropped.
    """
    prefixes = _layout_prefixes(blobs)
    converted: Dict[str, np.ndarray] = {}
    origin: Dict[str, str] = {}
    gn_norms: Set[str] = set()
    dropped: List[str] = []
    for blob, value in blobs.items():
        if _DROPPED.search(blob):
            dropped.append(blob)
            continue
        new_name = blob
        m = _SPLIT.match(blob)
        if m:
            module = _layer_to_module(m.group("layer"), prefixes)
            if module is not None:
                new_name = f"{module}.{_SUFFIX_TO_PARAM[m.group('suffix')]}"
                if m.group("suffix").startswith("gn_"):
                    gn_norms.add(f"{module}.norm.")
        if new_name in converted:
            raise ValueError(f"Detectron blobs {origin[new_name]!r} and {blob!r} both map to {new_name!r}")
        converted[new_name] = _move_background_last(new_name, np.asarray(value))
        origin[new_name] = blob
    _add_affine_statistics(converted, gn_norms)
    if dropped:
        logger.info("Dropped %d Detectron blobs that are not model weights: %s", len(dropped),
                    ", ".join(sorted(dropped)))
    return converted, origin


# -----------------------------------------------------------------------------
# detectron2 -> Detectron
# -----------------------------------------------------------------------------
def _last_block_index(keys: Iterable[str]) -> Dict[int, int]:
    """Stage -> index of its last block, from ResNet keys (`...res4.5.conv1.weight` -> {4: 5})."""
    last: Dict[int, int] = {}
    for key in keys:
        m = re.search(r"(?:^|\.)res(\d)\.(\d+)\.", key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            last[stage] = max(last.get(stage, -1), block)
    return last


def _norm_suffix(param: str, is_group_norm: bool) -> str:
    """Blob suffix of a norm parameter (`norm.weight` -> `bn_s`, or `gn_s` for GroupNorm)."""
    kind = "gn" if is_group_norm else "bn"
    return {"norm.weight": f"{kind}_s", "norm.bias": f"{kind}_b", "norm.running_mean": "bn_rm",
            "norm.running_var": "bn_riv"}[param]


def _module_to_layer(module: str, context: Mapping) -> Optional[str]:
    """Detectron layer name of a detectron2 module path, or None."""
    m = re.fullmatch(r"(?:backbone\.(?:bottom_up\.)?)?stem\.conv1", module)
    if m:
        return "conv1"
    m = re.fullmatch(r"(?:backbone\.(?:bottom_up\.)?|roi_heads\.)?res(\d)\.(\d+)\.(conv[123]|shortcut)", module)
    if m:
        return f"res{m.group(1)}_{m.group(2)}_branch{_MODULE_TO_BRANCH[m.group(3)]}"
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)", module)
    if m:
        stage = int(m.group(2))
        block = context["last_block"].get(stage)
        if block is None:
            raise ValueError(f"{module}: the state_dict has no ResNet stage res{stage} to name it after")
        if m.group(1) == "output":
            return f"fpn_res{stage}_{block}_sum"
        top = stage == context["top_fpn_stage"]
        return f"fpn_inner_res{stage}_{block}_sum" + ("" if top else "_lateral")
    m = re.fullmatch(r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)", module)
    if m:
        blob = {"conv": "conv_rpn", "objectness_logits": "rpn_cls_logits", "anchor_deltas": "rpn_bbox_pred"}
        return blob[m.group(1)] + ("_fpn2" if context["is_fpn"] else "")
    m = re.fullmatch(r"roi_heads\.box_head\.fc(\d)", module)
    if m:
        return f"fc{int(m.group(1)) + 5}"
    m = re.fullmatch(r"roi_heads\.box_head\.conv(\d+)", module)
    if m:
        return f"head_conv{m.group(1)}"
    m = re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)", module)
    if m:
        return m.group(1)
    m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d+)", module)
    if m:
        return f"_[mask]_fcn{m.group(1)}"
    simple = {"roi_heads.mask_head.deconv": "conv5_mask", "roi_heads.mask_head.predictor": "mask_fcn_logits",
              "roi_heads.keypoint_head.score_lowres": "kps_score_lowres"}
    if module in simple:
        return simple[module]
    m = re.fullmatch(r"roi_heads\.keypoint_head\.conv_fcn(\d+)", module)
    if m:
        return f"conv_fcn{m.group(1)}"
    return None


def _move_background_first(layer: str, value: np.ndarray) -> np.ndarray:
    """Inverse of `_move_background_last` (zero background deltas and mask channel)."""
    if layer == "cls_score":
        return np.concatenate([value[-1:], value[:-1]], axis=0)
    if layer == "bbox_pred":
        return np.concatenate([np.zeros_like(value[:4]), value], axis=0)
    if layer == "mask_fcn_logits" and value.shape[0] > 1:
        return np.concatenate([np.zeros_like(value[:1]), value], axis=0)
    return value


def detectron2_to_detectron(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Renames a detectron2 state_dict (name -> array) to Detectron blobs.

    The inverse of `detectron_to_detectron2` for the architectures it knows
    (ResNet C4 / FPN, RPN, box, mask and keypoint heads). Batch-norm step
    counters (`num_batches_tracked`) are left out; any other key without a
    Detectron name is a ValueError listing them all.
    """
    keys = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    lateral_stages = [int(m.group(1)) for k in keys for m in [re.search(r"fpn_lateral(\d)\.", k)] if m]
    context = {"last_block": _last_block_index(keys), "is_fpn": bool(lateral_stages),
               "top_fpn_stage": max(lateral_stages) if lateral_stages else None}
    blobs: Dict[str, np.ndarray] = {}
    unknown: List[str] = []
    for key in keys:
        m = re.fullmatch(r"(?P<module>.+?)\.(?P<param>norm\.(?:weight|bias|running_mean|running_var)|weight|bias)",
                         key)
        layer = _module_to_layer(m.group("module"), context) if m else None
        if layer is None:
            unknown.append(key)
            continue
        param = m.group("param")
        if param.startswith("norm."):
            is_group_norm = f"{m.group('module')}.norm.running_mean" not in state_dict
            suffix = _norm_suffix(param, is_group_norm)
        else:
            suffix = "w" if param == "weight" else "b"
        if layer == "conv1" and param.startswith("norm."):
            layer = "res_conv1"  # Detectron names the stem's norm after the stage, not the conv
        blobs[f"{layer}_{suffix}"] = _move_background_first(layer, np.asarray(state_dict[key]))
    if unknown:
        raise ValueError("These parameters have no Detectron blob name: " + ", ".join(unknown))
    return blobs
