"""The ATen-only ROIAlign equals torchvision's kernel (forward and gradient) on randomised
inputs: aligned and not, adaptive and fixed sampling, every pyramid scale, boxes partly or
wholly outside the map, tiny and huge boxes, several images, and no boxes."""
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from mrcnn_plugin.layers import ROIAlign
from mrcnn_plugin.layers.roi_align import roi_align_aten


def _random_rois(n: int, num_images: int, extent: float, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * extent * 1.2 - 0.1 * extent
    wh = torch.rand(n, 2, generator=generator) ** 3 * extent * 0.8
    boxes = torch.cat([xy, xy + wh], dim=1)
    # Hand-picked edge cases: outside the image, straddling the border, sub-pixel, whole image.
    special = torch.tensor([[-40.0, -30.0, -5.0, -2.0], [-10.0, -10.0, 12.0, 9.0],
                            [extent - 5, extent - 5, extent + 30, extent + 30], [10.0, 10.0, 10.4, 10.2],
                            [0.0, 0.0, extent, extent], [5.0, 5.0, 5.0, 9.0]])
    boxes = torch.cat([special, boxes])
    batch = torch.randint(0, num_images, (boxes.shape[0], 1), generator=generator).float()
    return torch.cat([batch, boxes], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("stride", [4, 8, 16, 32])
def test_forward_matches_torchvision(aligned, sampling_ratio, stride):
    """Outputs agree to 1e-5 relative to the feature scale."""
    g = torch.Generator().manual_seed(stride * 10 + sampling_ratio + int(aligned))
    size = 256
    features = torch.randn(2, 8, size // stride, size // stride + 3, generator=g)
    rois = _random_rois(120, 2, size, g)
    for output in [(7, 7), (14, 14)]:
        expected = tv_roi_align(features, rois, output, 1.0 / stride, sampling_ratio, aligned)
        got = roi_align_aten(features, rois, output, 1.0 / stride, sampling_ratio, aligned)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("crop_budget", [1 << 21, 1])
def test_gradient_matches_torchvision(crop_budget):
    """Gradients with respect to the features agree (the op trains the same), with all ROIs in
    one group and with one group per ROI (the crops are gathered once and split per group)."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 20, 24, generator=g)
    rois = _random_rois(40, 2, 80, g)
    weight = torch.randn(rois.shape[0], 4, 7, 7, generator=g)
    f1 = features.clone().requires_grad_()
    (tv_roi_align(f1, rois, (7, 7), 0.25, 0, True) * weight).sum().backward()
    f2 = features.clone().requires_grad_()
    (roi_align_aten(f2, rois, (7, 7), 0.25, 0, True, crop_budget) * weight).sum().backward()
    torch.testing.assert_close(f2.grad, f1.grad, atol=1e-5, rtol=1e-5)


def test_small_crop_budget_gives_the_same_result():
    """Splitting the ROIs into many groups (tiny memory budget) changes nothing."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 16, 32, 32, generator=g)
    rois = _random_rois(50, 1, 128, g)
    whole = roi_align_aten(features, rois, (7, 7), 0.25, 0, True)
    split = roi_align_aten(features, rois, (7, 7), 0.25, 0, True, crop_budget=1)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=0)


def test_no_boxes_and_scripted_module():
    """No ROIs give an empty (0, C, S, S) output; the scripted module runs the ATen version."""
    features = torch.randn(1, 3, 10, 10)
    assert roi_align_aten(features, torch.zeros(0, 5), (7, 7), 0.5, 0, True).shape == (0, 3, 7, 7)
    module = torch.jit.script(ROIAlign((5, 5), 0.5, 0, True))
    assert "torchvision" not in module.code
    rois = torch.tensor([[0.0, 1.0, 2.0, 15.0, 17.0]])
    torch.testing.assert_close(module(features, rois), tv_roi_align(features, rois, (5, 5), 0.5, 0, True),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_channels_last_features_and_elongated_boxes(requires_grad):
    """Channels-last features (the model's default layout) and a mix of wide-short and
    tall-narrow boxes, which fall into different crop-size groups, give torchvision's
    output and gradient, with and without gradients (each path gathers crops its own way)."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 16, 40, 48, generator=g).contiguous(memory_format=torch.channels_last)
    xy = torch.rand(60, 2, generator=g) * 150
    long_side = 20 + torch.rand(60, generator=g) * 170
    short_side = 1 + torch.rand(60, generator=g) * 6
    wide = torch.stack([long_side, short_side], dim=1)
    sizes = torch.where((torch.arange(60) % 2 == 0)[:, None], wide, wide.flip(1))
    rois = torch.cat([torch.randint(0, 2, (60, 1), generator=g).float(), xy, xy + sizes], dim=1)
    weight = torch.randn(60, 16, 7, 7, generator=g)
    f1 = features.detach().clone().requires_grad_(requires_grad)
    f2 = features.detach().clone().requires_grad_(requires_grad)
    expected = tv_roi_align(f1.contiguous(), rois, (7, 7), 0.25, 0, True)
    got = roi_align_aten(f2, rois, (7, 7), 0.25, 0, True, crop_budget=1 << 14)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if requires_grad:
        (expected * weight).sum().backward()
        (got * weight).sum().backward()
        torch.testing.assert_close(f2.grad, f1.grad, atol=1e-5, rtol=1e-5)
