"""Region feature extraction: ROIAlign (He et al. 2017) and ROIPool (Girshick 2015).

Both take boxes in the "pooler format" Tensor[R, 5] = (batch index, x0, y0, x1, y1)
in input-image pixels and `spatial_scale` = 1 / feature stride.

Eager, they call torchvision's kernels. Scripted, ROIAlign runs `roi_align_aten`,
a pure-PyTorch equivalent, so that a scripted or exported model holds only ATen
operators and loads in plain LibTorch without torchvision's operator library.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

__all__ = ["ROIAlign", "ROIPool", "roi_align_aten"]

def _axis_weights(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, size: int) -> Tuple[Tensor, Tensor]:
    """Bilinear sampling along one axis, summed over each bin's sample points.

    start, bin_size, grid: Tensor[R] (first coordinate, bin length and samples per
    bin, in feature pixels); pooled: bins; size: feature map length. Returns
    (weights Tensor[R, pooled, S], origin Tensor[R] int64): bin p of ROI r takes
    sum_s weights[r, p, s] * row[origin[r] + s]. Sample points follow
    torchvision's kernel: a point outside [-1, size] contributes 0, one in
    [-1, 0] reads the first pixel, one past size - 1 the last.
    """
    dtype, device = start.dtype, start.device
    # A zero-size ROI has 0 samples per bin (output 0), as in torchvision.
    grid_max = max(int(grid.max()), 1)
    spacing = bin_size / grid.clamp(min=1.0)
    p = torch.arange(pooled, device=device, dtype=dtype)
    g = torch.arange(grid_max, device=device, dtype=dtype)
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
           + (g[None, None, :] + 0.5) * spacing[:, None, None])                       # [R, P, G]
    valid = (g[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= float(size))
    pos = pos.clamp(min=0.0)
    low = pos.floor().long().clamp(max=size - 1)
    at_end = low >= size - 1
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(dtype))
    origin = torch.where(valid, low, torch.full_like(low, size)).flatten(1).min(dim=1).values.clamp(max=size - 1)
    rel_low = torch.where(valid, low - origin[:, None, None], torch.zeros_like(low))
    rel_high = torch.where(valid, high - origin[:, None, None], torch.zeros_like(high))
    span = int(rel_high.max()) + 1
    weights = torch.zeros((start.shape[0], pooled, span), device=device, dtype=dtype)
    valid_f = valid.to(dtype)
    weights.scatter_add_(2, rel_low, (1.0 - frac) * valid_f)
    weights.scatter_add_(2, rel_high, frac * valid_f)
    return weights, origin


def _roi_align_group(nhwc: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                     sampling_ratio: int, aligned: bool) -> Tensor:
    """ROIAlign of a group of ROIs: nhwc Tensor[N, H, W, C], rois Tensor[R, 5] -> Tensor[R, C, PH, PW].

    Bilinear sampling and bin averaging are separable in y and x, so each ROI's
    output is Ay @ crop @ Ax^T over the feature pixels its samples touch.
    """
    ph, pw = output_size
    h, w, c = nhwc.shape[1], nhwc.shape[2], nhwc.shape[3]
    r = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x0
    roi_h = rois[:, 4] * spatial_scale - offset - y0
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, float(sampling_ratio))
        grid_w = torch.full_like(roi_w, float(sampling_ratio))
    else:
        grid_h = torch.ceil(roi_h / ph)
        grid_w = torch.ceil(roi_w / pw)
    count = (grid_h * grid_w).clamp(min=1.0)
    ay, oy = _axis_weights(y0, roi_h / ph, grid_h, ph, h)                              # [R, PH, Hc]
    ax, ox = _axis_weights(x0, roi_w / pw, grid_w, pw, w)                              # [R, PW, Wc]
    hc, wc = ay.shape[2], ax.shape[2]
    rows = (oy[:, None] + torch.arange(hc, device=nhwc.device)).clamp(max=h - 1)
    cols = (ox[:, None] + torch.arange(wc, device=nhwc.device)).clamp(max=w - 1)
    batch = rois[:, 0].long()
    crops = nhwc[batch[:, None, None], rows[:, :, None], cols[:, None, :]]             # [R, Hc, Wc, C]
    ay = ay / count[:, None, None]
    rows_pooled = torch.bmm(ay, crops.reshape(r, hc, wc * c)).reshape(r, ph, wc, c)   # [R, PH, Wc, C]
    return torch.matmul(rows_pooled.permute(0, 3, 1, 2), ax.transpose(1, 2)[:, None])  # [R, C, PH, PW]


def roi_align_aten(features: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int, aligned: bool, crop_budget: int = 1 << 22) -> Tensor:
    """ROIAlign from ATen operators only, equal to torchvision.ops.roi_align up to float rounding.

    features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, PH, PW].
    Differentiable. ROIs are processed in groups of similar size so that the
    crops gathered at once hold at most about crop_budget elements.
    """
    ph, pw = output_size
    c, h, w = features.shape[1], features.shape[2], features.shape[3]
    r = rois.shape[0]
    out = features.new_zeros((r, c, ph, pw))
    if r == 0:
        return out
    nhwc = features.permute(0, 2, 3, 1).contiguous()
    extent_x = ((rois[:, 3] - rois[:, 1]) * spatial_scale).clamp(min=0.0, max=float(w)).ceil() + 3.0
    extent_y = ((rois[:, 4] - rois[:, 2]) * spatial_scale).clamp(min=0.0, max=float(h)).ceil() + 3.0
    area = extent_x * extent_y
    order = torch.argsort(area)
    area_sorted: List[float] = area[order].tolist()
    start = 0
    while start < r:
        end = start + 1
        # Grow the group while its largest crop (the last, by sorting) fits the budget.
        while end < r and area_sorted[end] * c * (end + 1 - start) <= crop_budget:
            end += 1
        idx = order[start:end]
        out[idx] = _roi_align_group(nhwc, rois[idx], output_size, spatial_scale, sampling_ratio, aligned)
        start = end
    return out


class ROIAlign(nn.Module):
    """Bilinear ROI feature extraction.

    aligned=True shifts box coordinates by -0.5 pixel so that a box's corners
    map onto pixel corners of the feature map (detectron2's ROIAlignV2); False
    is the paper's original ROIAlign. sampling_ratio=0 samples ceil(bin size)
    points per bin, a fixed value samples that many in each direction.
    """

    def __init__(self, output_size: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool = True):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, *output_size]."""
        if features.dtype != rois.dtype:
            rois = rois.to(features.dtype)
        if torch.jit.is_scripting():
            return roi_align_aten(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                                  self.aligned)
        return tv_roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                            self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


class ROIPool(nn.Module):
    """Max pooling over quantized bins (Fast R-CNN's RoIPool), for the paper's ablation.

    It uses torchvision's kernel, so a model with ROIPool needs torchvision's
    operators when scripted.
    """

    def __init__(self, output_size: Tuple[int, int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, *output_size]."""
        if features.dtype != rois.dtype:
            rois = rois.to(features.dtype)
        return tv_roi_pool(features, rois, self.output_size, self.spatial_scale)
