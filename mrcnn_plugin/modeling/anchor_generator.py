"""Anchors: reference boxes tiled over every feature-map position of every level."""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..layers import ShapeSpec
from ..registry import ANCHOR_GENERATOR_REGISTRY, build_from_registry

__all__ = ["DefaultAnchorGenerator", "build_anchor_generator", "generate_cell_anchors"]


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors centred on (0, 0): Tensor[len(sizes) * len(aspect_ratios), 4], XYXY.

    An anchor of size s and aspect ratio a = h / w has area s^2. Sizes vary
    slowest, matching the channel order of the RPN head's outputs. Coordinates
    are not rounded (detectron2; the original Detectron rounded them).
    """
    anchors = []
    for size in sizes:
        area = size ** 2.0
        for aspect_ratio in aspect_ratios:
            w = math.sqrt(area / aspect_ratio)
            h = aspect_ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


def _broadcast_params(params: Sequence, num_features: int, name: str) -> List[List[float]]:
    """Accepts one list for all levels ([[32, 64]]) or one list per level ([[32], [64]])."""
    if not isinstance(params[0], (list, tuple)):
        raise ValueError(f"ANCHOR_GENERATOR.{name} must be a list of lists, got {params}")
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(f"ANCHOR_GENERATOR.{name} has {len(params)} lists for {num_features} "
                         "feature maps")
    return [list(p) for p in params]


@ANCHOR_GENERATOR_REGISTRY.register()
class DefaultAnchorGenerator(nn.Module):
    """Tiles cell anchors over feature maps of given strides.

    Anchor (x, y, i) of a level sits at ((x + offset) * stride, (y + offset) * stride);
    the flattened order is (y, x, cell anchor), the order of the RPN head's outputs.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: List[int], offset: float = 0.0):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast_params(sizes, self.num_features, "SIZES")
        aspect_ratios = _broadcast_params(aspect_ratios, self.num_features, "ASPECT_RATIOS")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        self.offset = offset
        # A plain list, not buffers: a few numbers derived from the config, not
        # state, moved to the features' device when used.
        self.cell_anchors: List[Tensor] = [generate_cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)]

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> "DefaultAnchorGenerator":
        """From MODEL.ANCHOR_GENERATOR.{SIZES, ASPECT_RATIOS, OFFSET} and the levels' strides."""
        a = cfg.MODEL.ANCHOR_GENERATOR
        return cls(a.SIZES, a.ASPECT_RATIOS, [s.stride for s in input_shape], a.OFFSET)

    @property
    def num_cell_anchors(self) -> List[int]:
        return [len(cell_anchors) for cell_anchors in self.cell_anchors]

    @property
    def num_anchors(self) -> List[int]:
        return self.num_cell_anchors

    def _grid_anchors(self, grid_sizes: List[List[int]], device: torch.device) -> List[Tensor]:
        anchors: List[Tensor] = []
        for i, cell_anchors in enumerate(self.cell_anchors):
            base_anchors = cell_anchors.to(device)
            shift_x, shift_y = _create_grid_offsets(grid_sizes[i], self.strides[i], self.offset, device)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, features: List[Tensor]) -> List[Tensor]:
        """features: one Tensor[N, C, Hi, Wi] per level -> anchors Tensor[Hi * Wi * A, 4] per level."""
        grid_sizes = [[int(f.shape[-2]), int(f.shape[-1])] for f in features]
        return self._grid_anchors(grid_sizes, features[0].device)


def _create_grid_offsets(size: List[int], stride: int, offset: float,
                         device: torch.device) -> Tuple[Tensor, Tensor]:
    """x and y shifts, Tensor[H * W] each, of every grid position, row-major."""
    grid_height, grid_width = size
    shifts_x = torch.arange(offset * stride, grid_width * stride, step=stride, dtype=torch.float32,
                            device=device)
    shifts_y = torch.arange(offset * stride, grid_height * stride, step=stride, dtype=torch.float32,
                            device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def build_anchor_generator(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Builds the anchor generator named by MODEL.ANCHOR_GENERATOR.NAME."""
    return build_from_registry(ANCHOR_GENERATOR_REGISTRY, cfg.MODEL.ANCHOR_GENERATOR.NAME, cfg, input_shape)
