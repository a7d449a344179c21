"""Tests of the config system: defaults, YAML merging, key and value checks."""

import logging
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import yaml

from mrcnn_plugin.config import (
    PLUGIN_KEYS,
    UNUSED_DETECTRON2_DEFAULTS,
    UNUSED_DETECTRON2_KEYS,
    CfgNode,
    ConfigKeyError,
    ConfigValueError,
    get_cfg,
    reset_unused_key_reports,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
LOGGER = "mrcnn_plugin.config"

# Our config file that produced each golden file prefix (see shared/golden/README.md).
GOLDEN_SOURCES = {
    "mask_rcnn_R_50_FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_R_50_C4": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml",
    "keypoint_rcnn_R_50_FPN": "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml",
}
GOLDEN_IMAGES = ("astronaut", "chelsea", "coffee")


# -----------------------------------------------------------------------------
# Helpers
# -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_unused_key_reports() -> None:
    """Each test starts as if no unused key had been reported in this process."""
    reset_unused_key_reports()


def leaves(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Flatten a nested dict into {dotted key: value}."""
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def normalized(value: Any) -> Any:
    """Lists and tuples compared by content (YAML dumps have no tuples)."""
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    return value


def golden_config(shared_dir: Path, prefix: str, image: str = "astronaut") -> str:
    """The detectron2 config dump stored in a golden file, as YAML text."""
    path = shared_dir / "golden" / "data" / f"{prefix}__{image}.pt"
    return torch.load(path, weights_only=False)["config"]


def unused_key_warnings(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    """Warnings about dropped detectron2 keys captured so far."""
    return [r for r in caplog.records if r.name == LOGGER and hasattr(r, "unused_keys")]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_matches_dump(cfg: CfgNode, dump: Dict[str, Any], skip: tuple = ()) -> None:
    """Every key of the dump that the plugin keeps has the dump's value in cfg."""
    ours = leaves(cfg)
    for key, value in leaves(dump).items():
        if key in UNUSED_DETECTRON2_KEYS or key in skip:
            continue
        assert key in ours, f"{key} missing from the config"
        assert normalized(ours[key]) == normalized(value), f"{key}: {ours[key]!r} != {value!r}"


# -----------------------------------------------------------------------------
# Defaults
# -----------------------------------------------------------------------------
def test_defaults_are_valid_and_cloned() -> None:
    """get_cfg() returns a valid config, and a fresh copy each time."""
    cfg = get_cfg()
    cfg.validate()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    assert get_cfg().MODEL.ROI_HEADS.NUM_CLASSES == 80
    assert get_cfg().PLUGINS == []


def test_defaults_are_detectron2_defaults() -> None:
    """Keys that detectron2's base YAMLs override keep detectron2's own defaults here."""
    cfg = get_cfg()
    assert cfg.MODEL.MASK_ON is False
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"
    assert cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN == 12000
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32, 64, 128, 256, 512]]
    assert cfg.SOLVER.STEPS == (30000,) and cfg.SOLVER.BASE_LR == 0.001
    assert cfg.MODEL.DEVICE == "cuda" and cfg.MODEL.WEIGHTS == ""


def test_key_set_is_detectron2_key_set(shared_dir: Path) -> None:
    """Kept keys plus unused-detectron2 keys are exactly detectron2's keys, plus the plugin's own
    (PLUGIN_KEYS: PLUGINS and the paper-ablation switches)."""
    dump_keys = set(leaves(yaml.safe_load(golden_config(shared_dir, "mask_rcnn_R_50_FPN"))))
    our_keys = set(leaves(get_cfg()))
    assert our_keys | UNUSED_DETECTRON2_KEYS == dump_keys | PLUGIN_KEYS
    assert not our_keys & UNUSED_DETECTRON2_KEYS
    assert not dump_keys & PLUGIN_KEYS


# -----------------------------------------------------------------------------
# _BASE_ merging
# -----------------------------------------------------------------------------
def test_base_chain_is_merged_relative_to_each_file(tmp_path: Path) -> None:
    """_BASE_ is resolved relative to the file naming it, recursively; children win."""
    write(tmp_path / "root.yaml", 'MODEL:\n  WEIGHTS: "root.pkl"\n  ROI_HEADS:\n    NUM_CLASSES: 5\nVERSION: 2\n')
    write(
        tmp_path / "family" / "middle.yaml",
        '_BASE_: "../root.yaml"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 7\n  MASK_ON: True\n',
    )
    leaf = write(
        tmp_path / "family" / "kids" / "leaf.yaml",
        '_BASE_: "../middle.yaml"\nSOLVER:\n  STEPS: (10, 20)\n',
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(leaf))
    assert cfg.MODEL.WEIGHTS == "root.pkl"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 7
    assert cfg.MODEL.MASK_ON is True
    assert cfg.SOLVER.STEPS == (10, 20)
    # Untouched keys keep their defaults.
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"


def test_base_key_is_refused_outside_files() -> None:
    """_BASE_ in an override list is an error, not a silent no-op."""
    with pytest.raises(ConfigKeyError, match="_BASE_"):
        get_cfg().merge_from_list(["_BASE_", "x.yaml"])


# -----------------------------------------------------------------------------
# detectron2's own config dumps (golden files)
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("image", GOLDEN_IMAGES)
@pytest.mark.parametrize("prefix", sorted(GOLDEN_SOURCES))
def test_golden_dump_merges_and_reports_unused_keys_once(
    shared_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, prefix: str, image: str
) -> None:
    """A full detectron2 config dump merges; its unused keys are dropped and warned about once.

    The values of every kept key equal the dump's, and merging a second dump
    in the same process adds no second warning.
    """
    text = golden_config(shared_dir, prefix, image)
    dump = yaml.safe_load(text)
    path = write(tmp_path / "dump.yaml", text)
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg.merge_from_file(str(path))
        get_cfg().merge_from_file(str(path))
    records = unused_key_warnings(caplog)
    assert len(records) == 1
    expected = sorted(k for k in leaves(dump) if k in UNUSED_DETECTRON2_KEYS)
    assert records[0].unused_keys == expected and expected
    assert str(path) in records[0].getMessage()
    assert not set(leaves(cfg)) & UNUSED_DETECTRON2_KEYS
    assert_matches_dump(cfg, dump)


@pytest.mark.parametrize("prefix", sorted(GOLDEN_SOURCES))
def test_repo_config_reproduces_golden_dump(shared_dir: Path, prefix: str) -> None:
    """Our copy of the detectron2 YAML merges to the golden dump (the dump ran on CPU)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / GOLDEN_SOURCES[prefix]))
    dump = yaml.safe_load(golden_config(shared_dir, prefix))
    assert_matches_dump(cfg, dump, skip=("MODEL.DEVICE",))
    assert cfg.MODEL.DEVICE == "cuda"


# -----------------------------------------------------------------------------
# Every shipped YAML
# -----------------------------------------------------------------------------
ALL_YAMLS = sorted(CONFIGS.rglob("*.yaml"))


def test_expected_config_files_exist() -> None:
    """The detectron2 model-zoo files this plugin ships are all present."""
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL_YAMLS}
    assert set(GOLDEN_SOURCES.values()) <= names
    assert {"Base-RCNN-FPN.yaml", "Base-RCNN-C4.yaml", "Base-RCNN-DilatedC5.yaml"} <= names
    assert len(names) >= 18


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_shipped_yaml_merges_cleanly(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each file under configs/ merges, validates, and sets no unused detectron2 key."""
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg.merge_from_file(str(path))
    cfg.validate()
    assert not unused_key_warnings(caplog)


def test_model_variants_differ_as_their_names_say() -> None:
    """Spot checks of the variant files: depth, dilation, ResNeXt and schedule."""
    def load(name: str) -> CfgNode:
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIGS / name))
        return cfg

    dc5 = load("COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x.yaml")
    assert dc5.MODEL.RESNETS.DEPTH == 101 and dc5.MODEL.RESNETS.RES5_DILATION == 2
    assert dc5.MODEL.RPN.IN_FEATURES == ["res5"] and dc5.MODEL.MASK_ON
    x101 = load("COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x.yaml")
    assert (x101.MODEL.RESNETS.NUM_GROUPS, x101.MODEL.RESNETS.WIDTH_PER_GROUP) == (32, 8)
    assert x101.MODEL.RESNETS.STRIDE_IN_1X1 is False and x101.MODEL.KEYPOINT_ON
    one_x = load("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml")
    assert one_x.SOLVER.MAX_ITER == 90000 and one_x.SOLVER.STEPS == (60000, 80000)


# -----------------------------------------------------------------------------
# Unknown and unused keys
# -----------------------------------------------------------------------------
def test_typo_key_names_key_and_suggests_fix() -> None:
    """A misspelt key raises KeyError naming the dotted key and the right spelling."""
    with pytest.raises(KeyError) as info:
        get_cfg().merge_from_list(["MODEL.ROI_HEADS.NUM_CLASES", "3"])
    message = str(info.value)
    assert "MODEL.ROI_HEADS.NUM_CLASES" in message
    assert "did you mean MODEL.ROI_HEADS.NUM_CLASSES" in message


def test_typo_in_file_names_file_and_every_unknown_key(tmp_path: Path) -> None:
    """All unknown keys of a file are reported together, with the file name."""
    path = write(tmp_path / "bad.yaml", "MODEL:\n  ROI_HEAD:\n    NUM_CLASSES: 3\n  DEVICE:\n    ID: 1\nFOO: 1\n")
    with pytest.raises(ConfigKeyError) as info:
        get_cfg().merge_from_file(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "MODEL.ROI_HEAD " in message and "MODEL.ROI_HEADS" in message
    assert "MODEL.DEVICE.ID" in message and "FOO" in message


def test_unknown_key_inside_unused_section_is_an_error() -> None:
    """Only real detectron2 keys are tolerated: a typo inside RETINANET still fails."""
    with pytest.raises(ConfigKeyError, match="MODEL.RETINANET.NUM_CLASES.*MODEL.RETINANET.NUM_CLASSES"):
        get_cfg().merge_from_list(["MODEL.RETINANET.NUM_CLASES", "3"])


def test_unused_key_from_list_is_dropped_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    """An unused detectron2 key in an override list is dropped; a non-default value is flagged."""
    cfg = get_cfg()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cfg.merge_from_list(["TEST.PRECISE_BN.ENABLED", "True", "MODEL.MASK_ON", "True"])
        cfg.merge_from_list(["TEST.PRECISE_BN.ENABLED", "True"])
    records = unused_key_warnings(caplog)
    assert len(records) == 1
    assert records[0].unused_keys == ["TEST.PRECISE_BN.ENABLED"]
    assert "TEST.PRECISE_BN.ENABLED=True" in records[0].getMessage()
    assert "PRECISE_BN" not in cfg.TEST and cfg.MODEL.MASK_ON is True


def test_unused_table_holds_detectron2_defaults() -> None:
    """The unused-key table is keyed by full dotted names with detectron2's defaults."""
    assert UNUSED_DETECTRON2_KEYS == set(UNUSED_DETECTRON2_DEFAULTS)
    assert UNUSED_DETECTRON2_DEFAULTS["MODEL.RETINANET.NUM_CLASSES"] == 80
    assert "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE" not in UNUSED_DETECTRON2_KEYS


# -----------------------------------------------------------------------------
# Types
# -----------------------------------------------------------------------------
def test_wrong_type_names_key() -> None:
    """A value of the wrong type raises an error that names the key."""
    with pytest.raises(ConfigValueError, match="MODEL.ROI_HEADS.NUM_CLASSES"):
        get_cfg().merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", "many"])


def test_wrong_type_in_file_names_key(tmp_path: Path) -> None:
    """Type errors from a YAML file name the key too; a section given a scalar as well."""
    path = write(tmp_path / "bad.yaml", "SOLVER:\n  BASE_LR: fast\n")
    with pytest.raises(ConfigValueError, match="SOLVER.BASE_LR"):
        get_cfg().merge_from_file(str(path))
    with pytest.raises(ConfigValueError, match="MODEL.RPN is a section"):
        get_cfg().merge_from_list(["MODEL.RPN", "3"])


def test_lossless_conversions_are_accepted() -> None:
    """int -> float and list <-> tuple are converted to the default's type."""
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1", "SOLVER.STEPS", "[10, 20]", "MODEL.PIXEL_STD", "(2, 2, 2)"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.MODEL.PIXEL_STD == [2, 2, 2]


# -----------------------------------------------------------------------------
# Values
# -----------------------------------------------------------------------------
def test_num_classes_zero_is_rejected_and_config_unchanged() -> None:
    """NUM_CLASSES 0 is refused, naming the key, and the failed merge changes nothing."""
    cfg = get_cfg()
    with pytest.raises(ConfigValueError, match="MODEL.ROI_HEADS.NUM_CLASSES = 0"):
        cfg.merge_from_list(["MODEL.MASK_ON", "True", "MODEL.ROI_HEADS.NUM_CLASSES", "0"])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80 and cfg.MODEL.MASK_ON is False


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.RESNETS.DEPTH", "42"),
        ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "-0.1"),
        ("MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.5"),
        ("MODEL.ROI_HEADS.IOU_THRESHOLDS", "[1.2]"),
        ("MODEL.RPN.IOU_THRESHOLDS", "[0.7, 0.3]"),
        ("MODEL.RPN.NMS_THRESH", "-1.0"),
        ("INPUT.FORMAT", "YUV"),
        ("MODEL.PIXEL_MEAN", "[1.0, 2.0]"),
        ("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"),
        ("SOLVER.IMS_PER_BATCH", "0"),
        ("SOLVER.STEPS", "(300, 200)"),
        ("MODEL.ANCHOR_GENERATOR.OFFSET", "1.0"),
        ("INPUT.MASK_FORMAT", "rle"),
    ],
)
def test_impossible_values_are_rejected(key: str, value: str) -> None:
    """Each impossible value raises ConfigValueError naming its key."""
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        get_cfg().merge_from_list([key, value])


def test_cross_key_checks_name_both_keys() -> None:
    """IOU_LABELS must have one more item than IOU_THRESHOLDS; both keys are named."""
    with pytest.raises(ConfigValueError, match="MODEL.RPN.IOU_LABELS.*MODEL.RPN.IOU_THRESHOLDS"):
        get_cfg().merge_from_list(["MODEL.RPN.IOU_LABELS", "[0, 1]"])
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RPN.IOU_LABELS", "[0, 1]", "MODEL.RPN.IOU_THRESHOLDS", "[0.5]"])


def test_validate_catches_direct_assignment() -> None:
    """validate() checks values set by attribute assignment, which bypasses merging."""
    cfg = get_cfg()
    cfg.INPUT.FORMAT = "HSV"
    with pytest.raises(ConfigValueError, match="INPUT.FORMAT"):
        cfg.validate()


def test_version() -> None:
    """VERSION 2 (detectron2's current version) is accepted; other versions are refused."""
    cfg = get_cfg()
    cfg.merge_from_list(["VERSION", "2"])
    assert cfg.VERSION == 2
    with pytest.raises(ConfigValueError, match="VERSION"):
        cfg.merge_from_list(["VERSION", "1"])


def test_frozen_config_refuses_merge() -> None:
    """Merging into a frozen config raises instead of silently changing it."""
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.merge_from_list(["MODEL.MASK_ON", "True"])
    assert cfg.MODEL.MASK_ON is False


def test_plugins_key_takes_module_names() -> None:
    """PLUGINS (plugin-specific) holds module names; empty names are refused."""
    cfg = get_cfg()
    cfg.merge_from_list(["PLUGINS", "['my_pkg.heads']"])
    assert cfg.PLUGINS == ["my_pkg.heads"]
    with pytest.raises(ConfigValueError, match="PLUGINS"):
        cfg.merge_from_list(["PLUGINS", "['']"])


def test_odd_override_list_is_rejected() -> None:
    """An override list must alternate keys and values."""
    with pytest.raises(ConfigValueError, match="alternate"):
        get_cfg().merge_from_list(["MODEL.MASK_ON"])


def test_non_mapping_file_is_rejected(tmp_path: Path) -> None:
    """A YAML file that is not a mapping gets an error naming the file."""
    path = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigValueError, match="list.yaml"):
        get_cfg().merge_from_file(str(path))


def test_merge_from_other_cfg_applies_same_policy() -> None:
    """merge_from_other_cfg checks keys and values like the other merges."""
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode({"MODEL": {"MASK_ON": True}}))
    assert cfg.MODEL.MASK_ON is True
    with pytest.raises(ConfigKeyError, match="MODEL.MASK"):
        cfg.merge_from_other_cfg(CfgNode({"MODEL": {"MASK": True}}))
