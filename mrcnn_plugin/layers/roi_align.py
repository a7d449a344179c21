"""Region feature extraction: ROIAlign (He et al. 2017) and ROIPool (Girshick 2015).

Both take boxes in the "pooler format" Tensor[R, 5] = (batch index, x0, y0, x1, y1)
in input-image pixels and `spatial_scale` = 1 / feature stride.

ROIAlign runs `roi_align_aten`, a pure-PyTorch equivalent of torchvision's
kernel, so that a scripted or exported model holds only ATen operators and
loads in plain LibTorch without torchvision's operator library; on CPU it is
also ~3x faster than that kernel. Eager CUDA inference calls torchvision's
kernel; ROIPool always does.

ROIAlign averages each bin's bilinear samples; with bin_reduction "max" it takes
their maximum instead (`roi_align_max_aten`, ATen only, eager and scripted), the
paper's Table 2c ablation.
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

__all__ = ["ROIAlign", "ROIPool", "roi_align_aten", "roi_align_max_aten", "size_groups", "BIN_REDUCTIONS"]

BIN_REDUCTIONS = ("avg", "max")

def _axis_weights(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int,
                  size: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Bilinear sampling along one axis, summed over each bin's sample points.

    start, bin_size, grid: Tensor[R] (first coordinate, bin length and samples per
    bin, in feature pixels); pooled: bins; size: feature map length. Returns
    (weights Tensor[R, pooled, S], origin Tensor[R] int64, span Tensor[R] int64):
    bin p of ROI r takes sum_s weights[r, p, s] * row[origin[r] + s], and
    weights[r, :, span[r]:] is zero. Sample points follow torchvision's kernel:
    a point outside [-1, size] contributes 0, one in [-1, 0] reads the first
    pixel, one past size - 1 the last.
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
    span = rel_high.flatten(1).max(dim=1).values + 1
    weights = torch.zeros((start.shape[0], pooled, int(span.max())), device=device, dtype=dtype)
    valid_f = valid.to(dtype)
    weights.scatter_add_(2, rel_low, (1.0 - frac) * valid_f)
    weights.scatter_add_(2, rel_high, frac * valid_f)
    return weights, origin, span


def size_groups(span_y: Tensor, span_x: Tensor, channels: int, crop_budget: int,
                 bucket_factor: float = 1.25) -> List[Tuple[Tensor, int, int]]:
    """ROIs grouped by crop size: (members Tensor[G] int64, crop height, crop width) per group.

    span_y, span_x: Tensor[R], the feature pixels each ROI's samples read along y
    and x. A group's crops are padded to its largest ROI, so ROIs are bucketed by
    both sides (buckets bucket_factor apart; 1.25: padding adds at most ~56% to a
    crop) and a bucket is split so that a group gathers about crop_budget values
    at most. Mask pasting (modeling/postprocessing.py) groups its regions the same way.
    """
    bucket_y = torch.ceil(torch.log(span_y.clamp(min=1).double()) / math.log(bucket_factor)).long()
    bucket_x = torch.ceil(torch.log(span_x.clamp(min=1).double()) / math.log(bucket_factor)).long()
    key = bucket_y * (int(bucket_x.max()) + 1) + bucket_x
    order = torch.argsort(key)
    keys: List[int] = key[order].tolist()
    sy: List[int] = span_y[order].tolist()
    sx: List[int] = span_x[order].tolist()
    groups: List[Tuple[Tensor, int, int]] = []
    r = len(keys)
    start = 0
    while start < r:
        end = start + 1
        hc, wc = sy[start], sx[start]
        while end < r and keys[end] == keys[start]:
            next_hc, next_wc = max(hc, sy[end]), max(wc, sx[end])
            if next_hc * next_wc * channels * (end + 1 - start) > crop_budget:
                break
            hc, wc = next_hc, next_wc
            end += 1
        groups.append((order[start:end], hc, wc))
        start = end
    return groups


def _pool_crops(ay: Tensor, ax: Tensor, crops: Tensor) -> Tensor:
    """ay Tensor[R, PH, Hc], ax Tensor[R, PW, Wc], crops Tensor[R * Hc * Wc, C] -> Tensor[R, PH, PW, C]."""
    r, ph, hc, wc = ay.shape[0], ay.shape[1], ay.shape[2], ax.shape[2]
    c = crops.shape[1]
    rows_pooled = torch.bmm(ay, crops.reshape(r, hc, wc * c)).reshape(r * ph, wc, c)
    ax_rows = ax[:, None].expand(r, ph, ax.shape[1], wc).reshape(r * ph, ax.shape[1], wc)
    return torch.bmm(ax_rows, rows_pooled).reshape(r, ph, ax.shape[1], c)


def roi_align_aten(features: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int, aligned: bool, crop_budget: int = 1 << 21) -> Tensor:
    """ROIAlign from ATen operators only, equal to torchvision.ops.roi_align up to float rounding.

    features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, PH, PW]
    (laid out channels-last). Bilinear sampling and bin averaging are separable
    in y and x, so ROI r's output is ay[r] @ crop[r] @ ax[r]^T over the Hc x Wc
    feature pixels its samples touch. ROIs are processed in groups of similar
    crop size (`size_groups`). Without gradients each group gathers its crops
    into one reused buffer, which stays in cache for the matrix products;
    with gradients all crops are gathered at once, so that the backward pass is
    a single index_add into one gradient map, 2-4x faster than torchvision's
    kernel. Channels-last features are read without a copy.
    """
    ph, pw = output_size
    n, c, h, w = features.shape[0], features.shape[1], features.shape[2], features.shape[3]
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((r, c, ph, pw))
    x0, y0, bin_w, bin_h, grid_h, grid_w = _roi_bins(rois, output_size, spatial_scale, sampling_ratio, aligned)
    ay, oy, span_y = _axis_weights(y0, bin_h, grid_h, ph, h)
    ax, ox, span_x = _axis_weights(x0, bin_w, grid_w, pw, w)
    ay = ay / (grid_h * grid_w).clamp(min=1.0)[:, None, None]
    base = rois[:, 0].long() * (h * w)
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
    groups = size_groups(span_y, span_x, c, crop_budget)
    weights: List[Tuple[Tensor, Tensor]] = []
    indices: List[Tensor] = []
    for members, hc, wc in groups:
        rows = (oy.index_select(0, members)[:, None] + torch.arange(hc, device=rois.device)).clamp(max=h - 1)
        cols = (ox.index_select(0, members)[:, None] + torch.arange(wc, device=rois.device)).clamp(max=w - 1)
        index = base.index_select(0, members)[:, None, None] + rows[:, :, None] * w + cols[:, None, :]
        indices.append(index.reshape(-1))
        weights.append((ay.index_select(0, members)[:, :, :hc], ax.index_select(0, members)[:, :, :wc]))
    if features.requires_grad:
        crops = flat.index_select(0, torch.cat(indices))
        sizes: List[int] = [int(i.shape[0]) for i in indices]
        parts: List[Tensor] = []
        for (ay_g, ax_g), group_crops in zip(weights, crops.split_with_sizes(sizes)):
            parts.append(_pool_crops(ay_g, ax_g, group_crops))
        order = torch.cat([g[0] for g in groups])
        unsort = torch.empty_like(order)
        unsort[order] = torch.arange(r, device=order.device)
        return torch.cat(parts).index_select(0, unsort).permute(0, 3, 1, 2)
    # Fresh multi-megabyte buffers cost page faults on every call; one buffer serves every group.
    buffer = flat.new_empty((max([int(i.shape[0]) for i in indices]), c))
    out = flat.new_empty((r, ph, pw, c))
    for (members, hc, wc), (ay_g, ax_g), index in zip(groups, weights, indices):
        crops = torch.index_select(flat, 0, index, out=buffer[: index.shape[0]])
        out.index_copy_(0, members, _pool_crops(ay_g, ax_g, crops))
    return out.permute(0, 3, 1, 2)


def _roi_bins(rois: Tensor, output_size: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
              aligned: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Bin layout of each ROI, in feature pixels, following torchvision's kernel.

    rois: Tensor[R, 5] (pooler format). Returns (x0, y0, bin_w, bin_h, grid_h,
    grid_w), each Tensor[R]: the ROI's top-left corner, its bin size, and its
    samples per bin along y and x (sampling_ratio, or ceil(bin size) when 0;
    0 for an empty aligned ROI, whose output is then 0).
    """
    ph, pw = output_size
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
    return x0, y0, roi_w / pw, roi_h / ph, grid_h, grid_w


def _axis_samples(start: Tensor, bin_size: Tensor, grid: int, pooled: int,
                  size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear sample points along one axis, `grid` of them in each of `pooled` bins.

    start, bin_size: Tensor[R] (feature pixels); size: the feature map's length.
    Returns (low, high) Tensor[R, pooled * grid] int64, the two pixels each
    sample reads, and (w_low, w_high) Tensor[R, pooled * grid], their weights;
    samples are ordered bin by bin. As in torchvision's kernel, a sample outside
    [-1, size] reads nothing (weights 0, value 0), one in [-1, 0] reads the first
    pixel and one past size - 1 the last.
    """
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, device=device, dtype=dtype)
    g = torch.arange(grid, device=device, dtype=dtype)
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
           + (g[None, None, :] + 0.5) * (bin_size / float(grid))[:, None, None]).flatten(1)
    valid = ((pos >= -1.0) & (pos <= float(size))).to(dtype)
    pos = pos.clamp(min=0.0)
    low = pos.floor().long().clamp(max=size - 1)
    at_end = low >= size - 1
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(pos), pos - low.to(dtype))
    return low, high, (1.0 - frac) * valid, frac * valid


def _bilinear_samples(flat: Tensor, base: Tensor, ys: Tuple[Tensor, Tensor, Tensor, Tensor],
                      xs: Tuple[Tensor, Tensor, Tensor, Tensor], width: int) -> Tensor:
    """Every sample value of a group of ROIs, explicitly.

    flat: features Tensor[N * H * W, C] (rows = pixels); base: Tensor[R] int64,
    each ROI's image offset (batch index * H * W); ys: `_axis_samples` along y,
    Tensor[R, Sy] each; xs: along x, Tensor[R, Sx] each.
    Returns Tensor[R, Sy, Sx, C]: the bilinear interpolation at each (y, x) sample.
    """
    y_low, y_high, wy_low, wy_high = ys
    x_low, x_high, wx_low, wx_high = xs
    r, sy, sx, c = y_low.shape[0], y_low.shape[1], x_low.shape[1], flat.shape[1]
    out = flat.new_zeros((r, sy, sx, c))
    for y, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x, wx in ((x_low, wx_low), (x_high, wx_high)):
            index = base[:, None, None] + y[:, :, None] * width + x[:, None, :]              # [R, Sy, Sx]
            values = flat.index_select(0, index.reshape(-1)).reshape(r, sy, sx, c)
            out = out + values * (wy[:, :, None] * wx[:, None, :])[:, :, :, None]
    return out


def _max_pool_group(flat: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                    sampling_ratio: int, aligned: bool, grid_h: int, grid_w: int, height: int,
                    width: int) -> Tensor:
    """Max-sampled ROIAlign of ROIs that share their samples per bin (grid_h x grid_w).

    flat: features Tensor[N * H * W, C]; rois: Tensor[R, 5] -> Tensor[R, PH, PW, C].
    """
    ph, pw = output_size
    r, c = rois.shape[0], flat.shape[1]
    if grid_h == 0 or grid_w == 0:
        return flat.new_zeros((r, ph, pw, c))
    x0, y0, bin_w, bin_h, _, _ = _roi_bins(rois, output_size, spatial_scale, sampling_ratio, aligned)
    ys = _axis_samples(y0, bin_h, grid_h, ph, height)
    xs = _axis_samples(x0, bin_w, grid_w, pw, width)
    base = rois[:, 0].long() * (height * width)
    samples = _bilinear_samples(flat, base, ys, xs, width)                                  # [R, PH*gh, PW*gw, C]
    return torch.amax(samples.reshape(r, ph, grid_h, pw, grid_w, c), dim=[2, 4])


def roi_align_max_aten(features: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
                       sampling_ratio: int, aligned: bool, sample_budget: int = 1 << 22) -> Tensor:
    """ROIAlign taking the maximum of each bin's bilinear samples instead of their average.

    features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, PH, PW].
    The sample points are ROIAlign's (`roi_align_aten`, torchvision's kernel): a
    grid_h x grid_w grid in each bin, the grid being sampling_ratio or, when 0,
    ceil(bin size) per ROI. Each sample value is computed explicitly and the bin
    keeps the largest; a sample outside the feature map has value 0 and a bin
    without samples (an empty aligned ROI) gives 0. Differentiable: the gradient
    goes to the pixels of each bin's maximal sample. ROIs are grouped by their
    grid (so that no sample is padding) and processed in chunks of about
    sample_budget gathered values at most.
    """
    ph, pw = output_size
    n, c, h, w = features.shape[0], features.shape[1], features.shape[2], features.shape[3]
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((r, c, ph, pw))
    _, _, _, _, grid_h, grid_w = _roi_bins(rois, output_size, spatial_scale, sampling_ratio, aligned)
    grid_h_long, grid_w_long = grid_h.long(), grid_w.long()
    key = grid_h_long * (int(grid_w_long.max()) + 1) + grid_w_long
    order = torch.argsort(key)
    keys: List[int] = key[order].tolist()
    gh_sorted: List[int] = grid_h_long[order].tolist()
    gw_sorted: List[int] = grid_w_long[order].tolist()
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
    parts: List[Tensor] = []
    start = 0
    while start < r:
        end = start + 1
        while end < r and keys[end] == keys[start]:
            end += 1
        gh, gw = gh_sorted[start], gw_sorted[start]
        chunk = max(1, sample_budget // max(1, ph * gh * pw * gw * c))
        for first in range(start, end, chunk):
            last = min(first + chunk, end)
            parts.append(_max_pool_group(flat, rois[order[first:last]], output_size, spatial_scale,
                                         sampling_ratio, aligned, gh, gw, h, w))
        start = end
    pooled = torch.cat(parts) if len(parts) > 1 else parts[0]                          # [R, PH, PW, C], sorted
    unsort = torch.empty_like(order)
    unsort[order] = torch.arange(r, device=order.device)
    return pooled.index_select(0, unsort).permute(0, 3, 1, 2)


def _eager_runs_aten_kernel(features: Tensor) -> bool:
    """Whether average ROIAlign of `features`, not scripted, runs roi_align_aten rather than
    torchvision's kernel.

    Scripted models always run it: they hold ATen operators only. On CPU the ATen version is also
    the faster one (bench: ~3x torchvision's kernel forward, 2-4x backward); torchvision's CUDA
    kernel serves eager GPU inference. Callers test torch.jit.is_scripting() themselves, in the
    `if`, where TorchScript folds it and drops the torchvision branch from the compiled code.
    """
    return features.requires_grad or not features.is_cuda


class ROIAlign(nn.Module):
    """Bilinear ROI feature extraction.

    aligned=True shifts box coordinates by -0.5 pixel so that a box's corners
    map onto pixel corners of the feature map (detectron2's ROIAlignV2); False
    is the paper's original ROIAlign. sampling_ratio=0 samples ceil(bin size)
    points per bin, a fixed value samples that many in each direction.
    bin_reduction: "avg" averages a bin's samples (the paper's and detectron2's
    choice), "max" keeps the largest (`roi_align_max_aten`).
    """

    def __init__(self, output_size: Tuple[int, int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool = True, bin_reduction: str = "avg"):
        super().__init__()
        if bin_reduction not in BIN_REDUCTIONS:
            raise ValueError(f"ROIAlign bin_reduction must be 'avg' or 'max', got {bin_reduction!r}")
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.bin_reduction = bin_reduction

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, *output_size]."""
        if features.dtype != rois.dtype:
            rois = rois.to(features.dtype)
        if self.bin_reduction == "max":
            return roi_align_max_aten(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                                      self.aligned)
        if torch.jit.is_scripting() or _eager_runs_aten_kernel(features):
            return roi_align_aten(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                                  self.aligned)
        return tv_roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                            self.aligned)

    def prepare_features(self, features: Tensor) -> Tensor:
        """features Tensor[N, C, H, W] in the memory format this ROIAlign reads without a copy:
        channels-last for the ATen kernels, as given for torchvision's. Poolers that read the same
        map (box and mask heads) convert it once with this."""
        if self.bin_reduction == "max" or torch.jit.is_scripting() or _eager_runs_aten_kernel(features):
            return features.contiguous(memory_format=torch.channels_last)
        return features

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, bin_reduction={self.bin_reduction}")


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

    def prepare_features(self, features: Tensor) -> Tensor:
        """features as given: torchvision's kernel reads any memory format."""
        return features
