"""Every config under configs/ builds a model by name through the registries, and the
model runs inference on a small image returning the heads that config turns on."""
from pathlib import Path

import pytest
import torch

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.modeling.roi_heads import Res5ROIHeads, StandardROIHeads

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")
                 if not p.name.startswith("Base-"))


def test_all_model_configs_are_found():
    """The configs the project promises are all there (detectron2's file names)."""
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    for stem in ["mask_rcnn_R_50_C4_1x", "mask_rcnn_R_50_C4_3x", "mask_rcnn_R_50_DC5_1x", "mask_rcnn_R_50_DC5_3x",
                 "mask_rcnn_R_50_FPN_1x", "mask_rcnn_R_50_FPN_3x", "mask_rcnn_R_101_C4_3x",
                 "mask_rcnn_R_101_DC5_3x", "mask_rcnn_R_101_FPN_3x", "mask_rcnn_X_101_32x8d_FPN_3x"]:
        assert f"COCO-InstanceSegmentation/{stem}.yaml" in names
    for stem in ["keypoint_rcnn_R_50_FPN_1x", "keypoint_rcnn_R_50_FPN_3x", "keypoint_rcnn_R_101_FPN_3x",
                 "keypoint_rcnn_X_101_32x8d_FPN_3x"]:
        assert f"COCO-Keypoints/{stem}.yaml" in names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs(config):
    """Build from the file, then run inference on a 96x128 image."""
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    expected_heads = Res5ROIHeads if cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads" else StandardROIHeads
    assert isinstance(model.roi_heads, expected_heads)
    depth = cfg.MODEL.RESNETS.DEPTH
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    assert len(bottom_up.res4) == {50: 6, 101: 23}[depth]
    if cfg.MODEL.RESNETS.NUM_GROUPS > 1:
        assert bottom_up.res2[0].conv2.groups == cfg.MODEL.RESNETS.NUM_GROUPS

    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.no_grad():
        out = model.inference([{"image": image}])[0]
    expected = {"pred_boxes", "scores", "pred_classes"}
    if cfg.MODEL.MASK_ON:
        expected.add("pred_masks")
    if cfg.MODEL.KEYPOINT_ON:
        expected |= {"pred_keypoints", "pred_keypoint_heatmaps"}
    assert set(out) == expected
    if cfg.MODEL.MASK_ON:
        assert out["pred_masks"].shape[1:] == (96, 128)


def test_a_config_without_this_project_s_keys_builds():
    """A config node made without PLUGINS and MODEL.CHANNELS_LAST (as detectron2's own get_cfg
    gives) still builds: the code reads this project's keys with their defaults."""
    from tiny_models import tiny_cfg

    cfg = tiny_cfg()
    cfg.pop("PLUGINS")
    cfg.MODEL.pop("CHANNELS_LAST")
    model = build_model(cfg)
    assert model.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
