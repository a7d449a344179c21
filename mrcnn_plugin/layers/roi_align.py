"""Region feature extraction: ROIAlign (He et al. 2017) and ROIPool (Girshick 2015).

Both take boxes in the "pooler format" Tensor[R, 5] = (batch index, x0, y0, x1, y1)
in input-image pixels and `spatial_scale` = 1 / feature stride.
"""
from typing import Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

__all__ = ["ROIAlign", "ROIPool"]


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
        return tv_roi_align(features, rois, self.output_size, self.spatial_scale,
                            self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


class ROIPool(nn.Module):
    """Max pooling over quantized bins (Fast R-CNN's RoIPool), for the paper's ablation."""

    def __init__(self, output_size: Tuple[int, int], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """features: Tensor[N, C, H, W]; rois: Tensor[R, 5] -> Tensor[R, C, *output_size]."""
        if features.dtype != rois.dtype:
            rois = rois.to(features.dtype)
        return tv_roi_pool(features, rois, self.output_size, self.spatial_scale)
