"""Axis-aligned boxes in XYXY absolute pixels, as tensor functions and a `Boxes` wrapper.

The model's scriptable path works on plain tensors with the functions below;
`Boxes` wraps them with detectron2's interface (`Boxes.tensor`) for the Python API.
"""
from typing import Iterator, List, Tuple, Union

import torch
from torch import Tensor

__all__ = ["Boxes", "box_area", "clip_boxes", "nonempty_boxes", "pairwise_iou", "pairwise_ioa"]


def box_area(boxes: Tensor) -> Tensor:
    """boxes: Tensor[N, 4] XYXY -> Tensor[N] areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def clip_boxes(boxes: Tensor, image_size: Tuple[int, int]) -> Tensor:
    """Clamps boxes: Tensor[N, 4] XYXY into an image of (height, width); returns a new tensor."""
    h, w = image_size
    x1 = boxes[:, 0].clamp(min=0, max=w)
    y1 = boxes[:, 1].clamp(min=0, max=h)
    x2 = boxes[:, 2].clamp(min=0, max=w)
    y2 = boxes[:, 3].clamp(min=0, max=h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty_boxes(boxes: Tensor, threshold: float = 0.0) -> Tensor:
    """boxes: Tensor[N, 4] -> Tensor[N] bool, True where width and height exceed `threshold`."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return (widths > threshold) & (heights > threshold)


def _pairwise_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Tensor[N, 4], Tensor[M, 4] -> intersection areas Tensor[N, M]."""
    width_height = torch.min(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.max(
        boxes1[:, None, :2], boxes2[:, :2])
    width_height.clamp_(min=0)
    return width_height.prod(dim=2)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair: Tensor[N, 4], Tensor[M, 4] -> Tensor[N, M].

    Pairs where both boxes are empty get IoU 0 rather than NaN.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    inter = _pairwise_intersection(boxes1, boxes2)
    return torch.where(inter > 0, inter / (area1[:, None] + area2 - inter),
                       torch.zeros(1, dtype=inter.dtype, device=inter.device))


def pairwise_ioa(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over the area of boxes2: Tensor[N, 4], Tensor[M, 4] -> Tensor[N, M]."""
    area2 = box_area(boxes2)
    inter = _pairwise_intersection(boxes1, boxes2)
    return torch.where(inter > 0, inter / area2, torch.zeros(1, dtype=inter.dtype, device=inter.device))


class Boxes:
    """A list of N boxes stored as `tensor`: Tensor[N, 4], XYXY, absolute pixels."""

    def __init__(self, tensor: Union[Tensor, List[List[float]]]):
        if not isinstance(tensor, Tensor):
            tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.numel() == 0:
            tensor = tensor.reshape((-1, 4)).to(dtype=torch.float32)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise ValueError(f"Boxes need a Tensor[N, 4], got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    def to(self, device: Union[str, torch.device]) -> "Boxes":
        return Boxes(self.tensor.to(device))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> Tensor:
        return box_area(self.tensor)

    def clip(self, image_size: Tuple[int, int]) -> None:
        """Clips the boxes in place into an image of (height, width)."""
        self.tensor = clip_boxes(self.tensor, image_size)

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        return nonempty_boxes(self.tensor, threshold)

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Multiplies x coordinates by scale_x and y coordinates by scale_y, in place."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    def get_centers(self) -> Tensor:
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def inside_box(self, box_size: Tuple[int, int], boundary_threshold: int = 0) -> Tensor:
        """Tensor[N] bool: boxes lying inside an image of (height, width), with slack."""
        height, width = box_size
        t = self.tensor
        return ((t[:, 0] >= -boundary_threshold) & (t[:, 1] >= -boundary_threshold)
                & (t[:, 2] < width + boundary_threshold) & (t[:, 3] < height + boundary_threshold))

    def __getitem__(self, item) -> "Boxes":
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        return Boxes(self.tensor[item])

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @classmethod
    def cat(cls, boxes_list: List["Boxes"]) -> "Boxes":
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))
