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

    def forward_relu(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """relu(self(x) + residual) (residual optional): Tensor[N, C_in, H, W] -> Tensor[N, C_out, H', W'].

        In CPU inference with the norm folded away (the fast mode) this is one
        oneDNN convolution that applies the add and the ReLU to each output tile
        while it is still in cache, instead of two more passes over the feature
        map: the same values (the same arithmetic in the same order), about 8%
        less backbone time. Otherwise: the convolution, an in-place add, an
        in-place ReLU.
        """
        if self._fusable(x):
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                    "relu", [], "")
            return torch.ops.mkldnn._convolution_pointwise(
                x, residual, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, "relu", [], "")
        out = self.forward(x)
        if residual is not None:
            # In place: a fresh full-size map per block would cost page faults as well as the pass.
            out += residual
        return F.relu_(out)

    def _fusable(self, x: Tensor) -> bool:
        """True when forward_relu may call oneDNN's fused convolution: CPU, float32, no norm or
        activation left, no gradient wanted, no autocast (bf16 mode keeps autocast's convolutions)."""
        if self.norm is not None or self.activation is not None or x.device.type != "cpu":
            return False
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32 or self.padding_mode != "zeros":
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return False
        if not torch.jit.is_scripting() and not _mkldnn_eager_ok():
            return False
        return True

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


@torch.jit.unused
def _mkldnn_eager_ok() -> bool:
    """Eager-only conditions of the fused path: oneDNN built in, no CPU autocast region, and
    not tracing (the tracer cannot record the fused operator's optional-scalar list)."""
    return (torch.backends.mkldnn.is_available() and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing())


def cat(tensors: List[Tensor], dim: int = 0) -> Tensor:
    """torch.cat that skips the copy for a single tensor."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)
