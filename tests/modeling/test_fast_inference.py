"""The fast inference mode (modeling/fast_inference.py): folding batch norms into convolutions and
channels-last weights change results by float rounding only; the bf16 mode keeps box decoding in
float32; the original model is never modified."""
import pytest
import torch
from torch import nn

from golden_utils import build_golden_model, golden_match_rate, load_golden
from mrcnn_plugin.layers import Conv2d, FrozenBatchNorm2d, WinogradConvStack
from mrcnn_plugin.modeling import build_model, fast_inference
from mrcnn_plugin.modeling.fast_inference import (Bf16Autocast, PooledLinear, build_switchable, enable_bf16,
                                                  fold_batch_norms, pooled_linears_as_convs, prepare_for_inference)
from mrcnn_plugin.modeling.inference_plan import InferencePlan, apply_plan, plan_stages
from mrcnn_plugin.modeling.roi_heads import FastRCNNConvFCHead
from mrcnn_plugin.layers import ShapeSpec
from tiny_models import synthetic_image, tiny_cfg


def _random_frozen_bn(channels: int, g: torch.Generator) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=g))
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("norm_kind", ["frozen", "bn_eval"])
def test_folded_conv_equals_conv_then_norm(bias, norm_kind):
    """conv -> norm and the folded conv give the same output (with and without a conv bias, for
    FrozenBN and for an eval-mode BatchNorm2d); the norm is gone afterwards."""
    g = torch.Generator().manual_seed(0)
    if norm_kind == "frozen":
        norm = _random_frozen_bn(8, g)
    else:
        norm = nn.BatchNorm2d(8).eval()
        with torch.no_grad():
            norm.weight.copy_(torch.rand(8, generator=g) + 0.5)
            norm.bias.copy_(torch.randn(8, generator=g))
            norm.running_mean.copy_(torch.randn(8, generator=g))
            norm.running_var.copy_(torch.rand(8, generator=g) + 0.1)
    conv = Conv2d(4, 8, kernel_size=3, padding=1, bias=bias, norm=norm, activation=nn.ReLU())
    x = torch.randn(2, 4, 9, 11, generator=g)
    with torch.no_grad():
        expected = conv(x)
        assert fold_batch_norms(conv) == 1
        got = conv(x)
    assert conv.norm is None and conv.bias is not None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_training_batch_norm_is_not_folded():
    """A BatchNorm2d in training mode normalises by batch statistics: folding it would change the
    output, so it is left alone."""
    conv = Conv2d(3, 4, kernel_size=1, bias=False, norm=nn.BatchNorm2d(4).train())
    assert fold_batch_norms(conv) == 0 and conv.norm is not None


@pytest.mark.parametrize("num_rois", [0, 1, 37])
def test_pooled_linear_equals_flatten_then_linear(num_rois):
    """PooledLinear (fc1 as an S x S convolution) gives linear(x.flatten(1)) up to float rounding,
    for channels-last and contiguous ROI features and for no ROIs at all."""
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(6 * 5 * 5, 11)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(11, 150, generator=g))
    pooled = PooledLinear(linear, (6, 5, 5))
    x = torch.randn(num_rois, 6, 5, 5, generator=g)
    with torch.no_grad():
        expected = linear(x.flatten(1))
        for as_conv in (True, False):
            pooled.pooled_as_conv = as_conv
            for layout in (torch.contiguous_format, torch.channels_last):
                got = pooled(x.contiguous(memory_format=layout))
                assert got.shape == (num_rois, 11)
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="150 inputs"):
        PooledLinear(linear, (6, 5, 4))


def test_box_head_fc1_becomes_a_convolution():
    """pooled_linears_as_convs replaces a FastRCNNConvFCHead's flatten + fc1 (with and without conv
    layers before them; the shape read from one call, the head declaring nothing) and leaves fc2;
    the head's output is unchanged up to float rounding."""
    torch.manual_seed(0)
    for conv_dims in ([], [4]):
        head = FastRCNNConvFCHead(ShapeSpec(channels=3, height=7, width=7), conv_dims=conv_dims, fc_dims=[16, 8])
        x = torch.randn(5, 3, 7, 7)
        with torch.no_grad():
            expected = head(x)
            assert pooled_linears_as_convs(head, lambda: head(x)) == 1
            got = head(x.contiguous(memory_format=torch.channels_last))
        assert isinstance(head.fc1, PooledLinear) and isinstance(head.fc2, nn.Linear)
        assert isinstance(head.flatten, nn.Identity)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert pooled_linears_as_convs(head, lambda: head(x)) == 0  # nothing left to replace


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


@pytest.mark.parametrize("channels_last", [True, False])
def test_prepare_for_inference_copies_and_matches(tiny_model, channels_last):
    """prepare_for_inference folds every backbone norm into a copy (the original keeps its state_dict
    keys) and the copy's detections equal the original's up to float rounding, in either layout
    (the box head's fc1 a PooledLinear, run as a convolution only channels-last)."""
    keys = list(tiny_model.state_dict().keys())
    num_norms = sum(1 for m in tiny_model.modules() if isinstance(getattr(m, "norm", None), FrozenBatchNorm2d))
    fast = prepare_for_inference(tiny_model, channels_last=channels_last)
    assert list(tiny_model.state_dict().keys()) == keys
    assert num_norms > 0 and not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
    assert isinstance(fast.roi_heads.box_head.fc1, PooledLinear)
    assert fast.roi_heads.box_head.fc1.pooled_as_conv == channels_last
    assert isinstance(tiny_model.roi_heads.box_head.fc1, nn.Linear)
    inputs = [{"image": synthetic_image(1)}]
    with torch.no_grad():
        a, b = tiny_model.inference(inputs)[0], fast.inference(inputs)[0]
    assert a["scores"].numel() > 0 and torch.equal(a["pred_classes"], b["pred_classes"])
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b["scores"], a["scores"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_model_scripts(tiny_model, channels_last):
    """The fast copy scripts (the export uses it) in either layout and the scripted copy equals it."""
    fast = prepare_for_inference(tiny_model, channels_last=channels_last)
    scripted = torch.jit.script(fast)
    inputs = [{"image": synthetic_image(2)}]
    with torch.no_grad():
        a, b = fast.inference(inputs)[0], scripted.inference(inputs)[0]
    assert torch.equal(a["pred_classes"], b["pred_classes"])
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-3, rtol=0)


def test_demo_predictor_runs_the_fast_mode_by_default(tiny_model, monkeypatch):
    """demo.config_predictor (mrcnn demo) runs a folded copy unless fast=False, with the same
    detections up to float rounding."""
    import numpy as np

    from mrcnn_plugin import demo
    from mrcnn_plugin.modeling import fast_inference

    prepared = []

    def recording_prepare(model, *args, **kwargs):
        prepared.append(model)
        return prepare_for_inference(model, *args, **kwargs)

    monkeypatch.setattr("mrcnn_plugin.modeling.build_model", lambda cfg: tiny_model)
    monkeypatch.setattr(fast_inference, "prepare_for_inference", recording_prepare)
    image = synthetic_image(1).permute(1, 2, 0).numpy()
    cfg = tiny_cfg(["MODEL.WEIGHTS", ""])  # the module's random weights, no checkpoint
    fast = demo.config_predictor(cfg).predict(image)
    assert prepared == [tiny_model]
    plain = demo.config_predictor(cfg, fast=False).predict(image)
    assert len(prepared) == 1
    assert len(plain["scores"]) > 0 and np.array_equal(fast["classes"], plain["classes"])
    np.testing.assert_allclose(fast["boxes"], plain["boxes"], atol=1e-3)


def test_bf16_wraps_the_matrix_stages_and_keeps_float32_outputs(tiny_model, monkeypatch):
    """Where bf16 is native (faked here), enable_bf16 wraps the backbone, RPN head and box / mask
    heads; boxes, scores and masks come out in float32 and finite."""
    monkeypatch.setattr(fast_inference._cpu, "bf16_native", lambda device="cpu": True)
    fast = prepare_for_inference(tiny_model, bf16=True)
    assert isinstance(fast.backbone, Bf16Autocast) and isinstance(fast.roi_heads.box_head, Bf16Autocast)
    # still what they were: the heads read their stages' attributes and types
    assert isinstance(fast.roi_heads.box_head, FastRCNNConvFCHead) and fast.backbone.size_divisibility == 32
    assert enable_bf16(fast) == []  # idempotent
    with torch.no_grad():
        out = fast.inference([{"image": synthetic_image(1)}])[0]
    assert out["pred_boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert torch.isfinite(out["pred_boxes"]).all() and out["pred_masks"].dtype == torch.bool


def _golden_plans(stages):
    """Every rewrite on and off: plain, channels-last alone, Winograd alone, everything on."""
    return [InferencePlan(), InferencePlan(channels_last=True), InferencePlan(winograd=stages),
            InferencePlan(channels_last=True, pooled_conv=True, winograd=stages)]


@pytest.mark.parametrize("name", ["mask_rcnn_R_50_FPN", "keypoint_rcnn_R_50_FPN"])
def test_every_plan_reproduces_the_reference(shared_dir, name):
    """On the reference R50-FPN weights, the switchable fast model's final detections match the
    reference detectron2's on a golden photo (shared/golden/match.py, >= 98%) under each plan the
    tuner can reach a rewrite's alternatives in: plain, channels-last, Winograd in every stage (the
    mask or keypoint head's convolutions on one canvas), and everything with the pooled fc1."""
    model = build_golden_model(shared_dir, name)
    fast, report = build_switchable(model)
    stages = plan_stages(fast)
    head = "roi_heads.mask_head" if name.startswith("mask") else "roi_heads.keypoint_head"
    assert {"backbone", "proposal_generator.rpn_head", head} <= set(stages)
    assert report["pooled_linear"] == ["roi_heads.box_head.fc1"]
    assert any(isinstance(m, WinogradConvStack) for m in fast.get_submodule(head).modules())
    golden = load_golden(shared_dir, name, "chelsea")
    h, w = golden["orig_hw"]
    inputs = [{"image": golden["image_bgr_chw_uint8"], "height": h, "width": w}]
    for plan in _golden_plans(stages):
        apply_plan(fast, plan)
        weight = fast.backbone.bottom_up.res2[0].conv2.weight  # a 3x3: the two layouts differ
        assert weight.is_contiguous(memory_format=torch.channels_last) == plan.channels_last
        with torch.no_grad():
            out = fast.inference(inputs)[0]
        assert golden_match_rate(shared_dir, golden["final"], out) >= 0.98, plan.label()


def test_bf16_without_native_support_warns_once_and_runs_float32(tiny_model, monkeypatch):
    """On a CPU without native bfloat16 (faked), bf16=True warns once per process and gives the
    float32 model: no stage wrapped, float32 weights, the fp32 fast model's detections exactly."""
    monkeypatch.setattr(fast_inference._cpu, "bf16_native", lambda device="cpu": False)
    monkeypatch.setattr(fast_inference, "_warned_bf16", False)
    with pytest.warns(RuntimeWarning, match="no native bfloat16") as record:
        fast = prepare_for_inference(tiny_model, bf16=True)
        prepare_for_inference(tiny_model, bf16=True)
    assert len([w for w in record if "bfloat16" in str(w.message)]) == 1
    assert not any(isinstance(m, Bf16Autocast) for m in fast.modules())
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    fp32 = prepare_for_inference(tiny_model)
    with torch.no_grad():
        got = fast.inference([{"image": synthetic_image(1)}])[0]
        want = fp32.inference([{"image": synthetic_image(1)}])[0]
    assert torch.equal(got["pred_boxes"], want["pred_boxes"]) and torch.equal(got["scores"], want["scores"])
