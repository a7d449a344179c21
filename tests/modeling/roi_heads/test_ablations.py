"""The Mask R-CNN paper's ablations (He et al. 2017, Table 2) as config switches: each new key is
validated, reaches the module it configures, trains one step and (for inference) scripts.

  MODEL.ROI_MASK_HEAD.LOSS_TYPE           "sigmoid" | "softmax"       (Table 2b)
  MODEL.ROI_{BOX,MASK,KEYPOINT}_HEAD.POOLER_BIN_REDUCTION "avg" | "max" (Table 2c)
  MODEL.ROI_MASK_HEAD.NAME "MaskRCNNMLPHead" with NUM_FC / FC_DIM     (Table 2e)
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from detection_compare import assert_same_detections
from mrcnn_plugin.config import ConfigValueError, get_cfg
from mrcnn_plugin.layers import ROIAlign, ShapeSpec
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.modeling.roi_heads import MaskRCNNConvUpsampleHead, MaskRCNNMLPHead, mask_rcnn_inference
from tiny_models import NUM_CLASSES, synthetic_sample, tiny_cfg


# ---------------------------------------------------------------- config keys


def test_new_keys_have_the_paper_defaults():
    """Defaults keep the paper's (and detectron2's) choices: sigmoid loss, average pooling in
    the bins, the FCN mask head; the MLP size is the paper's 2 x 1024."""
    cfg = get_cfg()
    assert cfg.MODEL.ROI_MASK_HEAD.LOSS_TYPE == "sigmoid"
    for head in ("ROI_BOX_HEAD", "ROI_MASK_HEAD", "ROI_KEYPOINT_HEAD"):
        assert cfg.MODEL[head].POOLER_BIN_REDUCTION == "avg"
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "MaskRCNNConvUpsampleHead"
    assert (cfg.MODEL.ROI_MASK_HEAD.NUM_FC, cfg.MODEL.ROI_MASK_HEAD.FC_DIM) == (2, 1024)


@pytest.mark.parametrize("key, value", [
    ("MODEL.ROI_MASK_HEAD.LOSS_TYPE", "'multinomial'"),
    ("MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION", "'mean'"),
    ("MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION", "'min'"),
    ("MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION", "'sum'"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "'ROIWarp'"),
    ("MODEL.ROI_MASK_HEAD.NUM_FC", "-1"),
    ("MODEL.ROI_MASK_HEAD.FC_DIM", "0"),
])
def test_invalid_values_are_refused_naming_the_key(key, value):
    """A value outside a switch's choices fails at merge time, naming the key; the config is unchanged."""
    cfg = get_cfg()
    with pytest.raises(ConfigValueError, match=key.replace(".", r"\.")):
        cfg.merge_from_list([key, value])
    assert cfg == get_cfg()


def test_softmax_loss_needs_class_specific_masks():
    """LOSS_TYPE softmax with CLS_AGNOSTIC_MASK is refused: one mask has no classes to compete."""
    cfg = get_cfg()
    with pytest.raises(ConfigValueError, match="CLS_AGNOSTIC_MASK"):
        cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.LOSS_TYPE", "softmax", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True])


# ---------------------------------------------------------------- wiring


def test_switches_reach_the_modules():
    """From the config: the mask head's loss_type, every ROIAlign level's bin reduction (box and
    mask poolers), and the MLP head with NUM_FC layers of FC_DIM and a 28x28 mask per class."""
    cfg = tiny_cfg(["MODEL.ROI_MASK_HEAD.LOSS_TYPE", "softmax", "MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION", "max",
                    "MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION", "max", "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNMLPHead",
                    "MODEL.ROI_MASK_HEAD.NUM_FC", 3, "MODEL.ROI_MASK_HEAD.FC_DIM", 24])
    heads = build_model(cfg).roi_heads
    assert isinstance(heads.mask_head, MaskRCNNMLPHead) and heads.mask_head.loss_type == "softmax"
    for pooler in (heads.box_pooler, heads.mask_pooler):
        assert len(pooler.level_poolers) == 4
        assert all(isinstance(p, ROIAlign) and p.bin_reduction == "max" for p in pooler.level_poolers)
    fcs = [m for name, m in heads.mask_head.named_children() if name.startswith("fc") and "relu" not in name]
    assert [(m.in_features, m.out_features) for m in fcs] == [(32 * 14 * 14, 24), (24, 24), (24, 24)]
    assert heads.mask_head.predictor.out_features == NUM_CLASSES * 28 * 28
    out = heads.mask_head(torch.randn(5, 32, 14, 14))
    assert out.shape == (5, NUM_CLASSES, 28, 28)

    default = build_model(tiny_cfg()).roi_heads
    assert isinstance(default.mask_head, MaskRCNNConvUpsampleHead) and default.mask_head.loss_type == "sigmoid"
    assert all(p.bin_reduction == "avg" for p in default.box_pooler.level_poolers)


def test_keypoint_pooler_switch_reaches_the_module():
    """ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION configures the keypoint pooler only."""
    heads = build_model(tiny_cfg(["MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION", "max"], keypoints=True)).roi_heads
    assert all(p.bin_reduction == "max" for p in heads.keypoint_pooler.level_poolers)
    assert all(p.bin_reduction == "avg" for p in heads.box_pooler.level_poolers)


def test_mlp_head_empty_input_and_c4_shape():
    """The MLP head maps zero ROIs to (0, K, M, M); on C4 it reads res5's 7x7 output (pooler 14)
    and predicts 14x14 masks, the FCN head's size there."""
    head = MaskRCNNMLPHead(ShapeSpec(channels=4, height=14, width=14), num_classes=2, fc_dims=[8])
    assert head(torch.zeros(0, 4, 14, 14)).shape == (0, 2, 28, 28)
    heads = build_model(tiny_cfg(["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNMLPHead"], c4=True)).roi_heads
    assert heads.mask_head.mask_size == 14
    assert heads.mask_head.fc1.in_features == 512 * 7 * 7


def test_softmax_inference_is_the_softmax_across_classes_at_the_predicted_class():
    """With LOSS_TYPE softmax the model's pred_masks (before pasting) are, per detection, the softmax
    over the K class logits and the zero background logit, at the predicted class's channel."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(["MODEL.ROI_MASK_HEAD.LOSS_TYPE", "softmax"])).eval()
    with torch.no_grad():
        # Mask logits far from 0, so that softmax and sigmoid differ clearly.
        model.roi_heads.mask_head.predictor.weight.normal_(std=0.5)
        features = model.backbone(model.preprocess_image([{"image": synthetic_sample()["image"]}])[0])
        boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 30.0, 120.0, 90.0], [0.0, 0.0, 40.0, 30.0]])
        classes = torch.tensor([2, 0, 1])
        given = [{"pred_boxes": boxes, "scores": torch.ones(3), "pred_classes": classes}]
        got = model.roi_heads.forward_with_given_boxes(features, given)[0]["pred_masks"]
        logits = model.roi_heads.mask_head(model.roi_heads.mask_pooler(
            [features[f] for f in model.roi_heads.mask_in_features], [boxes]))
    with_background = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
    expected = F.softmax(with_background, dim=1)[torch.arange(3), classes][:, None]
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, mask_rcnn_inference(logits, classes, "sigmoid"), atol=1e-3)


# ---------------------------------------------------------------- train one step, script, match eager


VARIANTS = {
    "softmax-mask-loss": ["MODEL.ROI_MASK_HEAD.LOSS_TYPE", "softmax"],
    "mlp-mask-head": ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNMLPHead"],
    "max-bin-pooling": ["MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION", "max",
                        "MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION", "max"],
}
# Every new inference code path at once (softmax mask probabilities, the MLP head, max pooling):
# scripting a model takes seconds, so one model is scripted for all three.
ALL_SWITCHES = [item for overrides in VARIANTS.values() for item in overrides]


def _train_step(cfg, keypoints: bool = False) -> torch.nn.Module:
    """One training step of a fresh model: every loss finite, every ROI-head and FPN parameter gets
    a finite gradient (max pooling passes gradients to the FPN). Returns the model."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model([synthetic_sample(keypoints=keypoints)])
    expected = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                "loss_keypoint" if keypoints else "loss_mask"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad and name.startswith(("roi_heads.", "backbone.fpn_")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    return model


def _assert_scripted_equals_eager(model: torch.nn.Module, keypoints: bool = False) -> None:
    """The scripted model's detections equal the eager model's on the synthetic image."""
    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0  # random weights: keep detections to compare
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    inputs = [{"image": synthetic_sample()["image"]}]
    with torch.no_grad():
        eager, got = model.inference(inputs)[0], scripted(inputs)[0]
    if keypoints:
        # Random keypoint heads give heatmap maxima up to ~1e9 (also with the default pooling):
        # their float rounding is relative, so keypoint scores and heatmaps are compared so.
        for key in ("pred_keypoints", "pred_keypoint_heatmaps"):
            torch.testing.assert_close(got.pop(key), eager.pop(key), rtol=1e-4, atol=1e-4, msg=key)
    assert_same_detections(got, eager)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_one_step(name):
    """Each ablation switch on its own: one training step with finite losses and gradients."""
    _train_step(tiny_cfg(VARIANTS[name]))


def test_all_switches_train_and_script():
    """Softmax loss + MLP head + max pooling together: one training step, then the scripted
    model's detections and masks equal eager's."""
    _assert_scripted_equals_eager(_train_step(tiny_cfg(ALL_SWITCHES)))


def test_max_bin_pooling_keypoint_head_trains_and_scripts():
    """The keypoint pooler with max bin reduction: one training step, scripted == eager."""
    cfg = tiny_cfg(["MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION", "max"], keypoints=True)
    _assert_scripted_equals_eager(_train_step(cfg, keypoints=True), keypoints=True)
