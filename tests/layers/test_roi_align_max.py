"""ROIAlign with "max" bin reduction (the Mask R-CNN paper's Table 2c ablation) against a plain
loop implementation: each bin's bilinear samples computed one by one, then their maximum.

The same loop with averaging reproduces torchvision's roi_align, which shows that the loop
samples the points ROIAlign samples; `roi_align_max_aten` must then equal the loop's max,
forward and backward, on small random inputs."""
import math
from typing import List, Tuple

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from mrcnn_plugin.layers import ROIAlign
from mrcnn_plugin.layers.roi_align import roi_align_max_aten


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """feature Tensor[C, H, W] at (y, x), with torchvision's border rules -> Tensor[C]."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return feature.new_zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(math.floor(y)), int(math.floor(x))
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * feature[:, y_low, x_low] + (1 - ly) * lx * feature[:, y_low, x_high]
            + ly * (1 - lx) * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])


def _reference(features: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int], scale: float,
               sampling_ratio: int, aligned: bool, reduction: str) -> torch.Tensor:
    """The paper's RoIAlign written out: per ROI, per bin, every sample point, then "avg" or "max"."""
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    outputs: List[torch.Tensor] = []
    for roi in rois.tolist():
        image = features[int(roi[0])]
        x0, y0 = roi[1] * scale - offset, roi[2] * scale - offset
        roi_w, roi_h = roi[3] * scale - offset - x0, roi[4] * scale - offset - y0
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        out = features.new_zeros((features.shape[1], ph, pw))
        for i in range(ph):
            for j in range(pw):
                samples = [_bilinear(image, y0 + i * bin_h + (a + 0.5) * bin_h / grid_h,
                                     x0 + j * bin_w + (b + 0.5) * bin_w / grid_w)
                           for a in range(grid_h) for b in range(grid_w)]
                if samples:
                    stacked = torch.stack(samples)
                    out[:, i, j] = stacked.max(dim=0).values if reduction == "max" else stacked.mean(dim=0)
        outputs.append(out)
    return torch.stack(outputs)


def _inputs(seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two 3-channel 9x11 float64 maps (stride 4) and 14 ROIs: random ones of many sizes, one of
    zero width, one wholly outside the image."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    xy = torch.rand(12, 2, generator=g, dtype=torch.float64) * 50 - 5
    wh = torch.rand(12, 2, generator=g, dtype=torch.float64) ** 2 * 40
    rois = torch.cat([torch.randint(0, 2, (12, 1), generator=g).double(), xy, xy + wh], dim=1)
    special = torch.tensor([[0, 5.0, 5.0, 5.0, 9.0], [1, -30.0, -30.0, -10.0, -5.0]], dtype=torch.float64)
    return features, torch.cat([rois, special])


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_reference_loop_average_is_torchvision(aligned, sampling_ratio):
    """The loop with averaging equals torchvision's roi_align: its sample points are ROIAlign's."""
    features, rois = _inputs(0)
    expected = tv_roi_align(features, rois, (3, 2), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(_reference(features, rois, (3, 2), 0.25, sampling_ratio, aligned, "avg"), expected)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_max_matches_reference_loop(aligned, sampling_ratio):
    """roi_align_max_aten equals the loop's per-bin maximum, also when split into one-ROI chunks,
    and differs from the average (the option changes something)."""
    features, rois = _inputs(1)
    expected = _reference(features, rois, (3, 2), 0.25, sampling_ratio, aligned, "max")
    got = roi_align_max_aten(features, rois, (3, 2), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(roi_align_max_aten(features, rois, (3, 2), 0.25, sampling_ratio, aligned,
                                                  sample_budget=1), expected)
    assert not torch.allclose(got, tv_roi_align(features, rois, (3, 2), 0.25, sampling_ratio, aligned))


def test_max_gradient_matches_reference_loop():
    """Gradients flow to the features and equal the loop's (autograd through the explicit max)."""
    features, rois = _inputs(2)
    weight = torch.randn(rois.shape[0], 3, 3, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    f1 = features.clone().requires_grad_()
    (_reference(f1, rois, (3, 2), 0.25, 0, True, "max") * weight).sum().backward()
    f2 = features.clone().requires_grad_()
    (roi_align_max_aten(f2, rois, (3, 2), 0.25, 0, True) * weight).sum().backward()
    assert f2.grad is not None and f2.grad.abs().sum() > 0
    torch.testing.assert_close(f2.grad, f1.grad)


def test_max_module_scripts_and_handles_no_boxes():
    """ROIAlign(bin_reduction="max") scripts without torchvision operators, matches eager, and
    returns an empty (0, C, S, S) output for no ROIs."""
    features, rois = _inputs(4)
    features = features.float()
    module = ROIAlign((3, 2), 0.25, 0, aligned=True, bin_reduction="max")
    scripted = torch.jit.script(module)
    assert "torchvision" not in scripted.code
    torch.testing.assert_close(scripted(features, rois.float()), module(features, rois.float()))
    assert module(features, torch.zeros(0, 5)).shape == (0, 3, 3, 2)
    with pytest.raises(ValueError, match="bin_reduction"):
        ROIAlign((3, 2), 0.25, 0, bin_reduction="median")
