"""Components are built by name, and third-party plugins register components from outside
the package, found through the config's PLUGINS list or the `mrcnn_plugin.plugins` entry points."""
import textwrap

import pytest
import torch

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.registry import ENTRY_POINT_GROUP, ROI_HEADS_REGISTRY, build_from_registry, load_plugins

PLUGIN_SOURCE = '''
from mrcnn_plugin.registry import {registry}
from mrcnn_plugin.modeling.roi_heads import {base}

@{registry}.register()
class {name}({base}):
    """A custom component defined outside mrcnn_plugin."""
    plugin_marker = "{name}"
'''


def _small_cfg():
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
                         "MODEL.ROI_MASK_HEAD.CONV_DIM", 32])
    return cfg


def _run_once(model):
    with torch.no_grad():
        return model.eval().inference([{"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)}])[0]


def test_custom_roi_heads_from_config_plugins_list(tmp_path, monkeypatch):
    """A module named in cfg.PLUGINS is imported and its registered ROI heads selected by name."""
    (tmp_path / "my_team_heads.py").write_text(PLUGIN_SOURCE.format(
        registry="ROI_HEADS_REGISTRY", base="StandardROIHeads", name="MyTeamROIHeads"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small_cfg()
    cfg.PLUGINS = ["my_team_heads"]
    cfg.MODEL.ROI_HEADS.NAME = "MyTeamROIHeads"
    model = build_model(cfg)
    assert model.roi_heads.plugin_marker == "MyTeamROIHeads"
    assert "pred_masks" in _run_once(model)


def test_custom_box_head_from_entry_point(tmp_path, monkeypatch):
    """An installed distribution declaring an entry point in group mrcnn_plugin.plugins is
    imported before the model is built, without any config change but the component's name."""
    (tmp_path / "vendor_box_head.py").write_text(PLUGIN_SOURCE.format(
        registry="ROI_BOX_HEAD_REGISTRY", base="FastRCNNConvFCHead", name="VendorBoxHead"))
    dist = tmp_path / "vendor_box_head-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vendor-box-head\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nvendor = vendor_box_head\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = "VendorBoxHead"
    model = build_model(cfg)
    assert model.roi_heads.box_head.plugin_marker == "VendorBoxHead"
    _run_once(model)


def test_unknown_component_names_registry_and_choices():
    """A misspelt component name is a KeyError naming the registry and what is registered."""
    cfg = _small_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHead"
    with pytest.raises(KeyError, match=r"StandardROIHead.*ROI_HEADS.*StandardROIHeads"):
        build_model(cfg)


def test_missing_plugin_module_is_a_clear_error():
    """A PLUGINS entry that cannot be imported names the module and where it was listed."""
    with pytest.raises(ImportError, match="no_such_plugin_module.*PLUGINS"):
        load_plugins(["no_such_plugin_module"])


def test_registry_builds_classes_and_functions():
    """A registry entry can be a class with from_config or a plain builder function."""
    @ROI_HEADS_REGISTRY.register()
    def built_by_function(cfg, input_shape):
        return ("function", input_shape)

    assert build_from_registry(ROI_HEADS_REGISTRY, "built_by_function", None, 7) == ("function", 7)
