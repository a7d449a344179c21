"""ROIPooler: crops a fixed-size feature for each box from the pyramid level that suits its size."""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..layers import ROIAlign, ROIPool
from ..layers.roi_align import BIN_REDUCTIONS
from ..structures import box_area

__all__ = ["ROIPooler", "assign_boxes_to_levels", "convert_boxes_to_pooler_format", "pooler_from_config"]


def assign_boxes_to_levels(boxes: List[Tensor], min_level: int, max_level: int,
                           canonical_box_size: int, canonical_level: int) -> Tensor:
    """Pyramid level of each box, FPN paper eq. (1), as an index from min_level.

    level = floor(canonical_level + log2(sqrt(area) / canonical_box_size)),
    clamped to [min_level, max_level]: a 224x224 box goes to level 4.
    boxes: one Tensor[Ri, 4] per image -> Tensor[sum Ri] int64 in [0, max - min].
    """
    box_sizes = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    level_assignments = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    level_assignments = torch.clamp(level_assignments, min=min_level, max=max_level)
    return level_assignments.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(boxes: List[Tensor]) -> Tensor:
    """One Tensor[Ri, 4] per image -> Tensor[sum Ri, 5] rows (image index, x0, y0, x1, y1)."""
    rows = []
    for i, b in enumerate(boxes):
        rows.append(torch.cat((torch.full((b.shape[0], 1), float(i), dtype=b.dtype, device=b.device), b),
                              dim=1))
    return torch.cat(rows, dim=0)


class ROIPooler(nn.Module):
    """Region feature extraction over one or several feature maps.

    pooler_type: "ROIAlignV2" (aligned ROIAlign, detectron2's default),
    "ROIAlign" (the paper's, without the half-pixel shift) or "ROIPool".
    scales: 1 / stride of each input level, finest first (1/4, 1/8, ...).
    bin_reduction: how ROIAlign reduces a bin's samples, "avg" or "max" (the
    paper's Table 2c); ROIPool takes the max over its quantized bins regardless.
    """

    def __init__(self, output_size: int, scales: List[float], sampling_ratio: int, pooler_type: str,
                 canonical_box_size: int = 224, canonical_level: int = 4, bin_reduction: str = "avg"):
        super().__init__()
        output = (output_size, output_size)
        if bin_reduction not in BIN_REDUCTIONS:
            raise ValueError(f"Unknown POOLER_BIN_REDUCTION {bin_reduction!r}; expected 'avg' or 'max'")
        if pooler_type == "ROIAlign":
            poolers = [ROIAlign(output, s, sampling_ratio, aligned=False, bin_reduction=bin_reduction)
                       for s in scales]
        elif pooler_type == "ROIAlignV2":
            poolers = [ROIAlign(output, s, sampling_ratio, aligned=True, bin_reduction=bin_reduction)
                       for s in scales]
        elif pooler_type == "ROIPool":
            poolers = [ROIPool(output, s) for s in scales]
        else:
            raise ValueError(f"Unknown POOLER_TYPE {pooler_type!r}; expected ROIAlign, ROIAlignV2 or ROIPool")
        self.level_poolers = nn.ModuleList(poolers)
        self.output_size = output

        min_level = -math.log2(scales[0])
        max_level = -math.log2(scales[-1])
        if not (math.isclose(min_level, round(min_level)) and math.isclose(max_level, round(max_level))):
            raise ValueError(f"Pooler scales must be powers of 1/2, got {scales}")
        self.min_level = int(round(min_level))
        self.max_level = int(round(max_level))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError(f"Pooler scales {scales} are not one level apart")
        if canonical_box_size <= 0:
            raise ValueError("canonical_box_size must be positive")
        self.canonical_level = canonical_level
        self.canonical_box_size = canonical_box_size

    def prepare_features(self, x: List[Tensor]) -> List[Tensor]:
        """x: one Tensor[N, C, Hl, Wl] per level, each in the memory format its ROI kernel reads
        without a copy (`ROIAlign.prepare_features`). forward does this itself; ROI heads whose
        poolers share feature maps do it once for all of them."""
        out: List[Tensor] = []
        for level, pooler in enumerate(self.level_poolers):
            out.append(pooler.prepare_features(x[level]))
        return out

    def forward(self, x: List[Tensor], boxes: List[Tensor]) -> Tensor:
        """x: one Tensor[N, C, Hl, Wl] per level; boxes: one Tensor[Ri, 4] per image, XYXY input pixels.

        Returns Tensor[sum Ri, C, S, S], rows in the order of the concatenated boxes.
        """
        num_levels = len(self.level_poolers)
        assert len(x) == num_levels, f"{len(x)} feature maps for {num_levels} pooler levels"
        x = self.prepare_features(x)
        pooler_fmt_boxes = convert_boxes_to_pooler_format(boxes)
        if num_levels == 1:
            return self.level_poolers[0](x[0], pooler_fmt_boxes)

        level_assignments = assign_boxes_to_levels(boxes, self.min_level, self.max_level,
                                                   self.canonical_box_size, self.canonical_level)
        num_boxes = pooler_fmt_boxes.shape[0]
        num_channels = x[0].shape[1]
        # Every box has one level, so every row is written. Channels-last features give
        # channels-last ROI features: the layout of the head's convolutions.
        memory_format = torch.channels_last if x[0].is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        output = torch.empty((num_boxes, num_channels, self.output_size[0], self.output_size[1]),
                             dtype=x[0].dtype, device=x[0].device, memory_format=memory_format)
        for level, pooler in enumerate(self.level_poolers):
            inds = torch.nonzero(level_assignments == level).squeeze(1)
            pooler_fmt_boxes_level = pooler_fmt_boxes[inds]
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes_level))
        return output


def pooler_from_config(section, scales: List[float]) -> ROIPooler:
    """The ROIPooler of one head's config section (MODEL.ROI_BOX_HEAD, ROI_MASK_HEAD or ROI_KEYPOINT_HEAD):
    its POOLER_RESOLUTION, POOLER_SAMPLING_RATIO, POOLER_TYPE and POOLER_BIN_REDUCTION."""
    return ROIPooler(section.POOLER_RESOLUTION, scales, section.POOLER_SAMPLING_RATIO, section.POOLER_TYPE,
                     bin_reduction=section.get("POOLER_BIN_REDUCTION", "avg"))
