"""WinogradConv2d (NNPACK's Winograd 3x3 convolution): the same function as the convolution it
replaces up to float32 rounding, in both memory formats, scripted and in a fresh process (where
NNPACK starts uninitialised); the ordinary convolution wherever NNPACK does not apply; and the fast
mode's rewrite picks exactly the convolutions outside the ResNet; a stack of them over many small
maps, computed on one canvas, gives each map's own result."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_plugin.layers import Conv2d, WinogradConv2d, WinogradConvStack, winograd_supported
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.modeling.fast_inference import prepare_for_inference, winograd_convs
from tiny_models import synthetic_image, tiny_cfg

needs_nnpack = pytest.mark.skipif(not torch._nnpack_available(), reason="this torch build has no NNPACK")


def _conv(channels: int = 32, seed: int = 0, relu: bool = True) -> Conv2d:
    torch.manual_seed(seed)
    conv = Conv2d(channels, channels, kernel_size=3, padding=1, activation=nn.ReLU() if relu else None)
    with torch.no_grad():
        conv.bias.normal_()
    return conv.eval()


def _max_relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).abs().max() / expected.double().abs().max())


@needs_nnpack
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_equals_the_convolution_it_replaces(memory_format):
    """Output within float32 rounding of the direct convolution (Winograd's error here is ~1e-6
    of the output's magnitude; a wrong transform would be off by O(1)), ReLU applied, laid out
    NCHW as NNPACK writes it (no copy back to channels-last)."""
    conv = _conv()
    fast = WinogradConv2d.from_conv(conv)
    x = torch.randn(2, 32, 23, 37).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = conv(x)
        got = fast(x)
        assert fast._use_nnpack(x)
    assert _max_relative_error(got, expected) < 1e-4
    assert got.min() >= 0  # the ReLU
    assert got.is_contiguous()


def test_falls_back_to_the_direct_convolution():
    """With gradients (training), an empty batch or under bfloat16 autocast the ordinary
    convolution runs: gradients flow as through the original, no error on zero images, bf16
    output."""
    conv = _conv(relu=False)
    fast = WinogradConv2d.from_conv(conv)
    x = torch.randn(1, 32, 9, 11, requires_grad=True)
    assert not fast._use_nnpack(x)
    fast(x).sum().backward()
    expected_grad = torch.autograd.grad(conv(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert fast(torch.zeros(0, 32, 9, 11)).shape == (0, 32, 9, 11)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(torch.randn(1, 32, 9, 11)).dtype == torch.bfloat16


@needs_nnpack
def test_scripted_runs_in_a_fresh_process(tmp_path):
    """Scripted and saved, the module runs NNPACK in a new process that never initialised it
    (TorchScript folds _nnpack_available away; the module initialises NNPACK itself) and gives the
    eager result."""
    fast = WinogradConv2d.from_conv(_conv())
    x = torch.randn(1, 32, 16, 20)
    with torch.no_grad():
        expected = fast(x)
    path = tmp_path / "conv.pt"
    torch.jit.script(fast).save(str(path))
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2]);\n"
            "with torch.no_grad(): torch.save(m(x), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, capture_output=True)
    got = torch.load(tmp_path / "y.pt")
    assert _max_relative_error(got, expected) < 1e-6


def test_only_plain_3x3_stride_1_convolutions_are_supported():
    """Strided, dilated, grouped, 1x1 and normed convolutions are refused."""
    assert winograd_supported(nn.Conv2d(4, 4, 3, padding=1))
    for conv in (nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                 nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 1),
                 Conv2d(4, 4, 3, padding=1, norm=nn.BatchNorm2d(4))):
        assert not winograd_supported(conv)
        with pytest.raises(ValueError):
            WinogradConv2d.from_conv(conv)


def test_fast_mode_replaces_the_convolutions_after_the_resnet():
    """winograd_convs replaces the FPN output convolutions, the RPN head's and the mask head's
    (4 + 1 + 4 in the tiny model, counting channels >= 16) and none inside the ResNet; the model's
    detections stay equal up to float rounding, eager and scripted."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    fast = prepare_for_inference(model, winograd=False)
    reference = prepare_for_inference(model, winograd=False)
    assert winograd_convs(fast, min_channels=16) == {"backbone": 4, "proposal_generator.rpn_head": 1,
                                                      "roi_heads.mask_head": 4}
    replaced = {name for name, m in fast.named_modules() if isinstance(m, WinogradConv2d)}
    assert not any(name.startswith("backbone.bottom_up") for name in replaced)
    assert {"proposal_generator.rpn_head.conv", "backbone.fpn_output2"} <= replaced
    # the mask head's four convolutions run as one stack on a canvas, in the first one's slot
    head = fast.roi_heads.mask_head
    assert isinstance(head.mask_fcn1, WinogradConvStack) and len(head.mask_fcn1.convs) == 4
    assert all(isinstance(getattr(head, f"mask_fcn{k}"), nn.Identity) for k in (2, 3, 4))
    inputs = [{"image": synthetic_image(1)}]
    with torch.no_grad():
        expected = reference.inference(inputs)[0]
        for candidate in (fast, torch.jit.script(fast)):
            got = candidate.inference(inputs)[0]
            assert got["scores"].numel() > 0 and torch.equal(got["pred_classes"], expected["pred_classes"])
            torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"], atol=1e-3, rtol=0)
            torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=0)


def _stack(channels: int = 16, num_convs: int = 3, seed: int = 0) -> WinogradConvStack:
    """convolutions with their ReLU as separate layers, as in the keypoint head"""
    layers = []
    for k in range(num_convs):
        layers += [WinogradConv2d.from_conv(_conv(channels, seed=seed + k, relu=False)), nn.ReLU()]
    return WinogradConvStack(layers)


def _layers(stack: WinogradConvStack) -> nn.Sequential:
    """the stack's convolutions and ReLUs, to run one after the other on each map"""
    return nn.Sequential(*[m for conv in stack.convs for m in (conv, nn.ReLU())])


@needs_nnpack
@pytest.mark.parametrize("num_maps, height, width", [(1, 14, 14), (16, 14, 14), (17, 14, 14), (7, 9, 13)])
def test_stack_on_a_canvas_gives_each_maps_own_result(num_maps, height, width):
    """Full and partial canvas grids, one map, non-square maps: every map's output is the one
    its layers give it alone (a separator that leaked would be off by O(1) at map borders)."""
    stack = _stack()
    layers = _layers(stack)
    g = torch.Generator().manual_seed(num_maps)
    x = torch.randn(num_maps, 16, height, width, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = stack(x)
        expected = torch.stack([layers(x[i:i + 1].contiguous())[0] for i in range(num_maps)])
    assert got.shape == expected.shape == (num_maps, 16, height, width)
    assert _max_relative_error(got, expected) < 1e-4


def test_stack_falls_back_to_its_layers():
    """With gradients the layers run one after the other (the ordinary convolution): same values,
    and gradients reach the input; the scripted stack gives the eager result."""
    stack = _stack()
    x = torch.randn(5, 16, 14, 14, requires_grad=True)
    expected = _layers(stack)(x)
    got = stack(x)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(stack)(x), stack(x), atol=1e-5, rtol=1e-5)


def test_stack_takes_only_winograd_convolutions_and_relus():
    with pytest.raises(ValueError):
        WinogradConvStack([nn.ReLU()])
    with pytest.raises(ValueError):
        WinogradConvStack([WinogradConv2d.from_conv(_conv()), nn.Conv2d(32, 32, 1)])
