"""The config node: detectron2-compatible merging with strict key checking.

`CfgNode` extends fvcore's `CfgNode` (which already resolves `_BASE_` files
and opens them through iopath) with the policy this plugin needs:

* a key that this plugin reads is type-checked and merged;
* a detectron2 key for a feature this plugin does not implement (see
  `defaults.UNUSED_DETECTRON2_DEFAULTS`) is dropped, and reported once per
  process in a single warning on the ``mrcnn_plugin.config`` logger;
* any other key raises `ConfigKeyError`, naming the full dotted key and the
  closest valid keys;
* after every merge the whole config is validated (`CfgNode.validate`).

A merge is all-or-nothing: it is tried on a copy first, so a file or list
that fails leaves the config exactly as it was.
"""

import difflib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from .defaults import _C, UNUSED_DETECTRON2_DEFAULTS

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "ConfigValueError",
    "get_cfg",
    "reset_unused_key_reports",
]

logger = logging.getLogger("mrcnn_plugin.config")

# The only config format version understood (detectron2's current one).
SUPPORTED_VERSION = 2
# How many "did you mean" suggestions an unknown key gets.
_MAX_SUGGESTIONS = 3

# Unused detectron2 keys already named in a warning by this process; each is
# reported once, however many files set it.
_REPORTED_UNUSED_KEYS: Set[str] = set()


class ConfigKeyError(KeyError):
    """A config names a key that neither this plugin nor detectron2 defines."""

    def __str__(self) -> str:
        # KeyError would show repr() of the message (quotes, escaped newlines).
        return str(self.args[0]) if self.args else ""


class ConfigValueError(ValueError):
    """A config key has a value of the wrong type or outside its valid range."""


# -----------------------------------------------------------------------------
# Nested-dict helpers
# -----------------------------------------------------------------------------
def _iter_paths(tree: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Yield (dotted path, value) for every section and leaf of a nested mapping."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, Mapping):
            yield from _iter_paths(value, path + ".")


def _iter_leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Yield (dotted path, value) for the leaves of a nested mapping only."""
    for path, value in _iter_paths(tree, prefix):
        if not isinstance(value, Mapping) or not value:
            yield path, value


def _tree_from_pairs(pairs: Sequence[Any]) -> Dict[str, Any]:
    """Turn a flat ["A.B", value, ...] override list into a nested dict."""
    if len(pairs) % 2:
        raise ConfigValueError(
            f"Config override list must alternate keys and values; got {len(pairs)} items: {list(pairs)}"
        )
    tree: Dict[str, Any] = {}
    for full_key, value in zip(pairs[0::2], pairs[1::2]):
        if full_key == BASE_KEY:
            raise ConfigKeyError(f"{BASE_KEY} can only be used in config files, not in an override list")
        *parents, leaf = str(full_key).split(".")
        node = tree
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                clash = ".".join(parents[: depth + 1])
                raise ConfigValueError(f"Config override {full_key} conflicts with the override of {clash}")
        node[leaf] = value
    return tree


def _normalize(value: Any) -> Any:
    """Lists and tuples compare equal by content (YAML has no tuples)."""
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    return value


# -----------------------------------------------------------------------------
# Unused detectron2 keys
# -----------------------------------------------------------------------------
def _unused_defaults() -> Mapping[str, Any]:
    """detectron2 keys that are accepted but not used, with their defaults."""
    return UNUSED_DETECTRON2_DEFAULTS


def _unused_sections() -> Set[str]:
    """Every dotted prefix of an unused key ("MODEL.RETINANET", but also "MODEL")."""
    sections: Set[str] = set()
    for key in _unused_defaults():
        parts = key.split(".")
        sections.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return sections


def reset_unused_key_reports() -> None:
    """Forget which unused detectron2 keys were reported (for tests)."""
    _REPORTED_UNUSED_KEYS.clear()


def _summarize(keys: Sequence[str], own_paths: Set[str]) -> List[str]:
    """Shorten a key list: a section this plugin lacks, set in full, becomes "SECTION.*"."""
    table = _unused_defaults()
    present = set(keys)
    named: List[str] = []
    for key in sorted(keys):
        parts = key.split(".")
        for depth in range(1, len(parts)):
            section = ".".join(parts[:depth])
            members = [k for k in table if k.startswith(section + ".")]
            if section not in own_paths and all(m in present for m in members):
                if f"{section}.*" not in named:
                    named.append(f"{section}.*")
                break
        else:
            named.append(key)
    return named


def _report_unused(dropped: Mapping[str, Any], source: str, own_paths: Set[str]) -> None:
    """Warn once per process about detectron2 keys that were dropped.

    The full sorted key list is attached to the log record as `unused_keys`.
    """
    new_keys = sorted(k for k in dropped if k not in _REPORTED_UNUSED_KEYS)
    if not new_keys:
        return
    _REPORTED_UNUSED_KEYS.update(new_keys)
    defaults = _unused_defaults()
    values = {k: CfgNode._decode_cfg_value(dropped[k]) for k in new_keys}
    changed = [f"{k}={values[k]!r}" for k in new_keys if _normalize(values[k]) != _normalize(defaults[k])]
    message = (
        f"{source} sets {len(new_keys)} detectron2 config key(s) for features mrcnn_plugin does "
        f"not implement; they are ignored: {', '.join(_summarize(new_keys, own_paths))}."
    )
    if changed:
        message += f" Of these, set to a non-default value: {', '.join(changed)}."
    logger.warning(message, extra={"unused_keys": new_keys})


# -----------------------------------------------------------------------------
# Sorting a loaded tree into kept, dropped and unknown keys
# -----------------------------------------------------------------------------
@dataclass
class _Split:
    """Keys of a loaded tree that are not merged: dropped ones (with values) and unknown ones."""

    dropped: Dict[str, Any] = field(default_factory=dict)
    unknown: List[str] = field(default_factory=list)


def _split_unused(value: Any, path: str, out: _Split) -> None:
    """Record an unused detectron2 key or section; unknown keys inside it are errors."""
    unused = _unused_defaults()
    if path in unused:
        out.dropped[path] = value
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            _split_unused(sub, f"{path}.{key}", out)
    elif path in _unused_sections():
        raise ConfigValueError(f"Config key {path} is a section; expected a mapping, got {value!r}")
    else:
        out.unknown.append(path)


def _split_tree(tree: Mapping[str, Any], node: "CfgNode", prefix: str, out: _Split) -> Dict[str, Any]:
    """Return the part of `tree` that `node` holds; record the rest in `out`."""
    kept: Dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key not in node:
            if path in _unused_defaults() or path in _unused_sections():
                _split_unused(value, path, out)
            elif node.is_new_allowed():
                kept[key] = value
            else:
                out.unknown.append(path)
        elif isinstance(node[key], _FvcoreCfgNode):
            if not isinstance(value, Mapping):
                raise ConfigValueError(f"Config key {path} is a section; expected a mapping, got {value!r}")
            kept[key] = _split_tree(value, node[key], path + ".", out)
        elif isinstance(value, Mapping) and value:
            # Keys below a leaf do not exist; name each of them.
            out.unknown.extend(p for p, _ in _iter_leaves(value, path + "."))
        else:
            kept[key] = value
    return kept


# -----------------------------------------------------------------------------
# Types
# -----------------------------------------------------------------------------
def _coerce(value: Any, current: Any, path: str) -> Any:
    """Convert a decoded value to the type of the key's current value, or raise.

    Same rules as yacs (list <-> tuple, anything for a key whose default is
    None), plus int -> float, which loses nothing. A None for a key that has
    a non-None default is refused: the model builders cannot use it.
    """
    if current is None or type(value) is type(current):
        return value
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if type(current) is float and type(value) is int:
        return float(value)
    raise ConfigValueError(
        f"Config key {path} expects a value of type {type(current).__name__} "
        f"(like its default {current!r}), got {type(value).__name__} {value!r}"
    )


# -----------------------------------------------------------------------------
# Validation rules
# -----------------------------------------------------------------------------
Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _int_at_least(low: int) -> Tuple[Check, str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _number_at_least(low: float) -> Tuple[Check, str]:
    return (lambda v: _is_number(v) and v >= low), f"a number >= {low}"


def _positive_number() -> Tuple[Check, str]:
    return (lambda v: _is_number(v) and v > 0), "a number > 0"


def _fraction() -> Tuple[Check, str]:
    return (lambda v: _is_number(v) and 0 <= v <= 1), "a number in [0, 1]"


def _one_of(*choices: Any) -> Tuple[Check, str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def _list_of(item: Tuple[Check, str], length: Optional[int] = None, min_length: int = 0) -> Tuple[Check, str]:
    """A list/tuple whose items all pass `item`, optionally of a fixed length."""
    check, text = item

    def ok(v: Any) -> bool:
        if not isinstance(v, (list, tuple)) or len(v) < min_length:
            return False
        if length is not None and len(v) != length:
            return False
        return all(check(x) for x in v)

    if length is not None:
        shape = f"a list of {length} items"
    elif min_length:
        shape = "a non-empty list"
    else:
        shape = "a list"
    return ok, f"{shape}, each {text}"


def _iou_thresholds() -> Tuple[Check, str]:
    check, _ = _list_of(_fraction(), min_length=1)
    return (lambda v: check(v) and list(v) == sorted(v)), "a non-empty ascending list of numbers in [0, 1]"


def _increasing_steps() -> Tuple[Check, str]:
    check, _ = _list_of(_int_at_least(0))
    return (
        lambda v: check(v) and all(a < b for a, b in zip(v, v[1:]))
    ), "a strictly increasing list of integers >= 0"


def _conv_dims() -> Tuple[Check, str]:
    channels = (lambda x: _is_int(x) and (x == -1 or x >= 1)), "an integer >= 1, or -1 for 'as many as the input'"
    return _list_of(channels, min_length=1)


def _optional(rule: Tuple[Check, str]) -> Tuple[Check, str]:
    check, text = rule
    return (lambda v: v is None or check(v)), f"None or {text}"


def _non_empty_str() -> Tuple[Check, str]:
    return (lambda v: isinstance(v, str) and bool(v)), "a non-empty string"


_FEATURE_NAMES = ("stem", "res2", "res3", "res4", "res5")
_POOLER_TYPES = ("ROIAlign", "ROIAlignV2", "ROIPool")
_BIN_REDUCTIONS = ("avg", "max")

# Per-key rules: each key must satisfy its check on its own.
_RULES: Dict[str, Tuple[Check, str]] = {
    "VERSION": _one_of(SUPPORTED_VERSION),
    "PLUGINS": _list_of(_non_empty_str()),
    "MODEL.PIXEL_MEAN": _list_of((_is_number, "a number"), length=3),
    "MODEL.PIXEL_STD": _list_of(_positive_number(), length=3),
    "MODEL.BACKBONE.FREEZE_AT": ((lambda v: _is_int(v) and 0 <= v <= 5), "an integer in [0, 5]"),
    "MODEL.RESNETS.DEPTH": _one_of(18, 34, 50, 101, 152),
    "MODEL.RESNETS.NUM_GROUPS": _int_at_least(1),
    "MODEL.RESNETS.WIDTH_PER_GROUP": _int_at_least(1),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": _int_at_least(1),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": _int_at_least(1),
    "MODEL.RESNETS.RES5_DILATION": _one_of(1, 2),
    "MODEL.RESNETS.OUT_FEATURES": _list_of(_one_of(*_FEATURE_NAMES), min_length=1),
    "MODEL.FPN.OUT_CHANNELS": _int_at_least(1),
    "MODEL.FPN.FUSE_TYPE": _one_of("sum", "avg"),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": _number_at_least(0),
    "MODEL.ANCHOR_GENERATOR.SIZES": _list_of(_list_of(_positive_number(), min_length=1), min_length=1),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": _list_of(_list_of(_positive_number(), min_length=1), min_length=1),
    "MODEL.ANCHOR_GENERATOR.OFFSET": ((lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    "MODEL.RPN.IN_FEATURES": _list_of(_non_empty_str(), min_length=1),
    "MODEL.RPN.IOU_THRESHOLDS": _iou_thresholds(),
    "MODEL.RPN.IOU_LABELS": _list_of(_one_of(-1, 0, 1), min_length=1),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": _int_at_least(1),
    "MODEL.RPN.POSITIVE_FRACTION": _fraction(),
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": _number_at_least(0),
    "MODEL.RPN.BBOX_REG_WEIGHTS": _list_of(_positive_number(), length=4),
    "MODEL.RPN.SMOOTH_L1_BETA": _number_at_least(0),
    "MODEL.RPN.LOSS_WEIGHT": _number_at_least(0),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": _int_at_least(1),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": _int_at_least(1),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": _int_at_least(1),
    "MODEL.RPN.POST_NMS_TOPK_TEST": _int_at_least(1),
    "MODEL.RPN.NMS_THRESH": _fraction(),
    "MODEL.RPN.CONV_DIMS": _conv_dims(),
    "MODEL.ROI_HEADS.NUM_CLASSES": _int_at_least(1),
    "MODEL.ROI_HEADS.IN_FEATURES": _list_of(_non_empty_str(), min_length=1),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": _iou_thresholds(),
    "MODEL.ROI_HEADS.IOU_LABELS": _list_of(_one_of(-1, 0, 1), min_length=1),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": _int_at_least(1),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": _fraction(),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": _fraction(),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": _fraction(),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": _number_at_least(0),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": _list_of(_positive_number(), length=4),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": _number_at_least(0),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": _int_at_least(1),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": _int_at_least(0),
    "MODEL.ROI_BOX_HEAD.NUM_FC": _int_at_least(0),
    "MODEL.ROI_BOX_HEAD.FC_DIM": _int_at_least(1),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": _int_at_least(0),
    "MODEL.ROI_BOX_HEAD.CONV_DIM": _int_at_least(1),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": _one_of(*_POOLER_TYPES),
    "MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION": _one_of(*_BIN_REDUCTIONS),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": _int_at_least(1),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": _int_at_least(0),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": _int_at_least(0),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": _int_at_least(1),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": _one_of(*_POOLER_TYPES),
    "MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION": _one_of(*_BIN_REDUCTIONS),
    "MODEL.ROI_MASK_HEAD.LOSS_TYPE": _one_of("sigmoid", "softmax"),
    "MODEL.ROI_MASK_HEAD.NUM_FC": _int_at_least(0),
    "MODEL.ROI_MASK_HEAD.FC_DIM": _int_at_least(1),
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION": _int_at_least(1),
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO": _int_at_least(0),
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE": _one_of(*_POOLER_TYPES),
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION": _one_of(*_BIN_REDUCTIONS),
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS": _list_of(_int_at_least(1)),
    "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS": _int_at_least(1),
    "MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE": _int_at_least(0),
    "MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT": _number_at_least(0),
    "INPUT.MIN_SIZE_TRAIN": _list_of(_int_at_least(1), min_length=1),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": _one_of("choice", "range"),
    "INPUT.MAX_SIZE_TRAIN": _int_at_least(1),
    "INPUT.MIN_SIZE_TEST": _int_at_least(0),
    "INPUT.MAX_SIZE_TEST": _int_at_least(1),
    "INPUT.RANDOM_FLIP": _one_of("horizontal", "vertical", "none"),
    "INPUT.CROP.TYPE": _one_of("relative_range", "relative", "absolute", "absolute_range"),
    "INPUT.CROP.SIZE": _list_of(_positive_number(), length=2),
    "INPUT.FORMAT": _one_of("BGR", "RGB"),
    "INPUT.MASK_FORMAT": _one_of("polygon", "bitmask"),
    "DATALOADER.NUM_WORKERS": _int_at_least(0),
    "DATALOADER.REPEAT_THRESHOLD": _number_at_least(0),
    "SOLVER.MAX_ITER": _int_at_least(0),
    "SOLVER.BASE_LR": _number_at_least(0),
    "SOLVER.BASE_LR_END": _number_at_least(0),
    "SOLVER.MOMENTUM": _number_at_least(0),
    "SOLVER.WEIGHT_DECAY": _number_at_least(0),
    "SOLVER.WEIGHT_DECAY_NORM": _number_at_least(0),
    "SOLVER.WEIGHT_DECAY_BIAS": _optional(_number_at_least(0)),
    "SOLVER.BIAS_LR_FACTOR": _number_at_least(0),
    "SOLVER.GAMMA": _number_at_least(0),
    "SOLVER.STEPS": _increasing_steps(),
    "SOLVER.NUM_DECAYS": _int_at_least(0),
    "SOLVER.WARMUP_FACTOR": _fraction(),
    "SOLVER.WARMUP_ITERS": _int_at_least(0),
    "SOLVER.WARMUP_METHOD": _one_of("linear", "constant"),
    "SOLVER.CHECKPOINT_PERIOD": _int_at_least(1),
    "SOLVER.IMS_PER_BATCH": _int_at_least(1),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": _one_of("value", "norm", "full_model"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": _positive_number(),
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": _positive_number(),
    "TEST.EVAL_PERIOD": _int_at_least(0),
    "TEST.KEYPOINT_OKS_SIGMAS": _list_of(_positive_number()),
    "TEST.AUG.MIN_SIZES": _list_of(_int_at_least(1), min_length=1),
    "TEST.AUG.MAX_SIZE": _int_at_least(1),
    "VIS_PERIOD": _int_at_least(0),
}


def _lookup(cfg: "CfgNode", path: str) -> Any:
    """Value at a dotted path of `cfg`."""
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    return node


def _cross_key_problems(cfg: "CfgNode") -> List[str]:
    """Problems that involve two keys, each message naming both."""
    problems = []
    for section in ("MODEL.RPN", "MODEL.ROI_HEADS"):
        labels = _lookup(cfg, f"{section}.IOU_LABELS")
        thresholds = _lookup(cfg, f"{section}.IOU_THRESHOLDS")
        if len(labels) != len(thresholds) + 1:
            problems.append(
                f"{section}.IOU_LABELS = {labels!r}: needs one more item than "
                f"{section}.IOU_THRESHOLDS = {thresholds!r}"
            )
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and len(cfg.INPUT.MIN_SIZE_TRAIN) != 2:
        problems.append(
            f"INPUT.MIN_SIZE_TRAIN = {cfg.INPUT.MIN_SIZE_TRAIN!r}: must be (min, max) when "
            "INPUT.MIN_SIZE_TRAIN_SAMPLING is 'range'"
        )
    if cfg.MODEL.ROI_MASK_HEAD.LOSS_TYPE == "softmax" and cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
        problems.append(
            "MODEL.ROI_MASK_HEAD.LOSS_TYPE = 'softmax' competes across classes: it needs class-specific "
            "masks (MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK False); with one mask it would be the sigmoid loss"
        )
    sigmas = cfg.TEST.KEYPOINT_OKS_SIGMAS
    num_keypoints = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    if sigmas and len(sigmas) != num_keypoints:
        problems.append(
            f"TEST.KEYPOINT_OKS_SIGMAS has {len(sigmas)} items: must be empty or have "
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = {num_keypoints} items"
        )
    return problems


# -----------------------------------------------------------------------------
# The node
# -----------------------------------------------------------------------------
class CfgNode(_FvcoreCfgNode):
    """fvcore CfgNode with detectron2-compatible, strictly checked merging."""

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> Dict[str, Any]:
        """Load a YAML file, resolving `_BASE_` relative to it (fvcore), as a dict."""
        try:
            loaded = super().load_yaml_with_base(filename, allow_unsafe=allow_unsafe)
        except (TypeError, AttributeError) as err:
            # fvcore assumes the file is a mapping; say so instead of a bare TypeError.
            raise ConfigValueError(f"Config file {filename} must contain a YAML mapping of keys: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigValueError(f"Config file {filename} must contain a YAML mapping of keys, got {loaded!r}")
        return loaded

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its `_BASE_` chain) into this config."""
        tree = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        self._merge_tree(tree, source=f"config file {cfg_filename}")

    def merge_from_list(self, cfg_list: Sequence[Any]) -> None:
        """Merge ["KEY.PATH", value, ...] overrides (values are parsed as Python literals)."""
        self._merge_tree(_tree_from_pairs(list(cfg_list)), source="config override list")

    def merge_from_other_cfg(self, cfg_other: Mapping[str, Any]) -> None:
        """Merge another config (or nested dict) into this one, with the same checks."""
        if BASE_KEY in cfg_other:
            raise ConfigKeyError(f"{BASE_KEY} can only be used in config files")
        self._merge_tree(_to_plain_dict(cfg_other), source="merged config")

    def validate(self) -> None:
        """Raise ConfigValueError naming every key whose value is impossible."""
        problems = self._problems()
        if problems:
            raise ConfigValueError("Invalid config value(s):\n  " + "\n  ".join(problems))

    def _problems(self) -> List[str]:
        """One message per invalid key; cross-key checks run once each key is valid."""
        problems = []
        for path, (check, requirement) in _RULES.items():
            value = _lookup(self, path)
            if not check(value):
                problems.append(f"{path} = {value!r}: must be {requirement}")
        return problems or _cross_key_problems(self)

    def valid_keys(self) -> List[str]:
        """Every dotted key and section a file may set: this config's and detectron2's unused ones."""
        own = [path for path, _ in _iter_paths(self)]
        others = sorted(_unused_sections()) + sorted(_unused_defaults())
        return list(dict.fromkeys(own + others))

    # -- internals ------------------------------------------------------------
    def _merge_tree(self, tree: Mapping[str, Any], source: str) -> None:
        """Check `tree` against this config, then apply it all-or-nothing."""
        if self.is_frozen():
            raise AttributeError(f"Cannot merge {source} into a frozen config; call defrost() first")
        _check_version(tree, source)
        split = _Split()
        kept = _split_tree(tree, self, "", split)
        if split.unknown:
            raise ConfigKeyError(self._unknown_key_message(split.unknown, source))
        coerced = self._coerce_tree(kept, self, "")
        trial = self.clone()
        _apply_tree(trial, coerced)
        problems = trial._problems()
        if problems:
            raise ConfigValueError(f"Invalid config value(s) after merging {source}:\n  " + "\n  ".join(problems))
        _apply_tree(self, coerced)
        _report_unused(split.dropped, source, {path for path, _ in _iter_paths(self)})

    def _unknown_key_message(self, unknown: List[str], source: str) -> str:
        """One line per unknown key, each with up to three close valid keys."""
        candidates = self.valid_keys()
        lines = []
        for path in unknown:
            matches = difflib.get_close_matches(path, candidates, n=_MAX_SUGGESTIONS)
            hint = f"did you mean {' or '.join(matches)}?" if matches else "no similar key exists."
            lines.append(f"Unknown config key {path} in {source}; {hint}")
        return "\n".join(lines)

    @classmethod
    def _coerce_tree(cls, tree: Mapping[str, Any], node: "CfgNode", prefix: str) -> Dict[str, Any]:
        """Decode string literals and check each value against the current value's type."""
        out: Dict[str, Any] = {}
        for key, value in tree.items():
            path = f"{prefix}{key}"
            current = node.get(key)
            if key not in node:  # only reached in a section that allows new keys
                out[key] = cls._decode_cfg_value(value)
            elif isinstance(current, _FvcoreCfgNode):
                out[key] = cls._coerce_tree(value, current, path + ".")
            else:
                decoded = cls._decode_cfg_value(value)
                if isinstance(decoded, _FvcoreCfgNode):
                    decoded = _to_plain_dict(decoded)
                out[key] = _coerce(decoded, current, path)
        return out


def _apply_tree(node: _FvcoreCfgNode, tree: Mapping[str, Any]) -> None:
    """Write already-checked values into `node`."""
    for key, value in tree.items():
        current = node.get(key)
        if isinstance(current, _FvcoreCfgNode) and isinstance(value, Mapping):
            _apply_tree(current, value)
        elif isinstance(value, Mapping):
            # A leaf whose default is None, or a section open to new keys.
            node[key] = type(node)(dict(value))
        else:
            node[key] = value


def _to_plain_dict(node: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursively convert a CfgNode (or mapping) into plain dicts."""
    return {k: _to_plain_dict(v) if isinstance(v, Mapping) else v for k, v in node.items()}


def _check_version(tree: Mapping[str, Any], source: str) -> None:
    """Refuse other config versions before their renamed keys look like typos."""
    version = CfgNode._decode_cfg_value(tree.get("VERSION", SUPPORTED_VERSION))
    if version != SUPPORTED_VERSION:
        raise ConfigValueError(
            f"VERSION = {version!r} in {source}: only detectron2 config version "
            f"{SUPPORTED_VERSION} is supported (older versions are not converted)"
        )


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the default config (the defaults' tree, as this module's CfgNode)."""
    return CfgNode(_C.clone())
