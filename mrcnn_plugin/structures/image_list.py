"""Batching images of different sizes into one padded tensor."""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageList", "pad_images"]


def pad_images(tensors: List[Tensor], size_divisibility: int = 0, pad_value: float = 0.0) -> Tensor:
    """Pads a list of Tensor[C, Hi, Wi] into Tensor[N, C, H, W], bottom-right padding.

    H and W are the largest Hi and Wi, rounded up to a multiple of size_divisibility
    (when > 1), so every FPN level has an integer size.
    """
    max_h = max([int(t.shape[-2]) for t in tensors])
    max_w = max([int(t.shape[-1]) for t in tensors])
    if size_divisibility > 1:
        stride = size_divisibility
        max_h = (max_h + (stride - 1)) // stride * stride
        max_w = (max_w + (stride - 1)) // stride * stride
    if len(tensors) == 1:
        t = tensors[0]
        padding = [0, max_w - int(t.shape[-1]), 0, max_h - int(t.shape[-2])]
        return F.pad(t, padding, value=pad_value).unsqueeze(0)
    shape = [len(tensors)] + list(tensors[0].shape[:-2]) + [max_h, max_w]
    batched = torch.full(shape, pad_value, dtype=tensors[0].dtype, device=tensors[0].device)
    for i, t in enumerate(tensors):
        batched[i, ..., : t.shape[-2], : t.shape[-1]].copy_(t)
    return batched


class ImageList:
    """A padded batch `tensor`: Tensor[N, C, H, W] and each image's size before padding.

    image_sizes: list of (height, width).
    """

    def __init__(self, tensor: Tensor, image_sizes: List[Tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """The image without its padding, Tensor[C, H, W]."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, device) -> "ImageList":
        return ImageList(self.tensor.to(device), self.image_sizes)

    @staticmethod
    def from_tensors(tensors: List[Tensor], size_divisibility: int = 0,
                     pad_value: float = 0.0) -> "ImageList":
        """Pads Tensor[C, Hi, Wi] images into one batch; see `pad_images`."""
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs at least one image")
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        return ImageList(pad_images(tensors, size_divisibility, pad_value), image_sizes)
