"""Normalization layers: FrozenBatchNorm2d and the `get_norm` factory.

Detectron2 checkpoints store FrozenBN statistics as buffers named `weight`,
`bias`, `running_mean` and `running_var`; this module keeps those names so the
checkpoints load unchanged.
"""
from typing import Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d", "get_norm", "NaiveSyncBatchNorm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers.

    The affine transform is `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`,
    folded into one scale and one shift per channel.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> Tuple[Tensor, Tensor]:
        """Returns (scale, shift), each Tensor[C], with y = x * scale + shift."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C, H, W] -> Tensor[N, C, H, W]."""
        if not x.requires_grad:
            # The fused inference kernel; the explicit form below keeps autograd
            # flowing to the input when earlier layers train.
            return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var,
                                                  self.weight, self.bias, False, 0.0, self.eps)
        scale, shift = self.scale_and_shift()
        out_dtype = x.dtype
        return x * scale.reshape(1, -1, 1, 1).to(out_dtype) + shift.reshape(1, -1, 1, 1).to(out_dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # BatchNorm checkpoints carry a step counter that frozen statistics do not need.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Returns `module` with every BatchNorm2d / SyncBatchNorm replaced by a frozen copy."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are averaged over all processes.

    Unlike `nn.SyncBatchNorm` it also works on CPU (gloo) and with empty batches
    on some workers; detectron2 calls this norm "SyncBN" too.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or not self.training or not dist.is_available() \
                or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        mean = x.mean(dim=[0, 2, 3])
        meansqr = (x * x).mean(dim=[0, 2, 3])
        count = torch.full((1,), float(x.shape[0]), device=x.device, dtype=x.dtype)
        # Weight each worker by its batch size, so an empty batch contributes nothing.
        stats = torch.cat([mean * count, meansqr * count, count])
        dist.all_reduce(stats)
        total = stats[-1].clamp(min=1)
        mean = stats[:channels] / total
        meansqr = stats[channels:2 * channels] / total
        var = meansqr - mean * mean
        invstd = torch.rsqrt(var + self.eps)
        scale = self.weight * invstd
        shift = self.bias - mean * scale
        self.running_mean += self.momentum * (mean.detach() - self.running_mean)
        self.running_var += self.momentum * (var.detach() - self.running_var)
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def get_norm(norm: Union[str, None], out_channels: int) -> Optional[nn.Module]:
    """Builds a normalization layer by detectron2's name.

    norm: "" or None (no norm), "BN", "SyncBN", "FrozenBN", "GN" (32 groups),
    "nnSyncBN" (torch's own SyncBatchNorm).
    """
    if norm is None or norm == "":
        return None
    if norm == "BN":
        return nn.BatchNorm2d(out_channels)
    if norm == "SyncBN":
        return NaiveSyncBatchNorm(out_channels)
    if norm == "nnSyncBN":
        return nn.SyncBatchNorm(out_channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(out_channels)
    if norm == "GN":
        return nn.GroupNorm(32, out_channels)
    raise ValueError(
        f"Unknown norm {norm!r}; expected one of '', 'BN', 'SyncBN', 'nnSyncBN', 'FrozenBN', 'GN'"
    )
