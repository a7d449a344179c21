"""Thin wrappers around torch layers: Conv2d with an optional norm and activation."""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conv2d", "cat", "ShapeSpec"]


@dataclass
class ShapeSpec:
    """Channels, size and stride of a feature map: the contract between a backbone and its heads."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None


class Conv2d(nn.Conv2d):
    """nn.Conv2d followed by an optional `norm` submodule and `activation` function.

    The norm is a child named `norm`, which gives detectron2's parameter names
    (`conv1.weight`, `conv1.norm.running_mean`).
    """

    def __init__(self, *args, norm: Optional[nn.Module] = None, activation: Optional[nn.Module] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C_in, H, W] -> Tensor[N, C_out, H', W']."""
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def cat(tensors: List[Tensor], dim: int = 0) -> Tensor:
    """torch.cat that skips the copy for a single tensor."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
