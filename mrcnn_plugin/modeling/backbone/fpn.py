"""Feature Pyramid Network (Lin et al. 2017) on top of a bottom-up backbone.

Outputs p2..p6 for ResNet's res2..res5: a 1x1 lateral convolution per input,
a top-down pathway (nearest 2x upsampling and sum), a 3x3 output convolution
per level, and p6 as a stride-2 subsample of p5 for the RPN's largest anchors.
"""
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import Conv2d, ShapeSpec, get_norm
from ...registry import BACKBONE_REGISTRY
from .backbone import Backbone
from .resnet import build_resnet_backbone

__all__ = ["FPN", "LastLevelMaxPool", "add_upsampled_2x_", "build_resnet_fpn_backbone"]


class LastLevelMaxPool(nn.Module):
    """p6 = max_pool(p5, kernel 1, stride 2): an extra, coarser level at no cost."""

    def __init__(self):
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: Tensor) -> List[Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


def add_upsampled_2x_(lateral: Tensor, top: Tensor) -> Tensor:
    """lateral += nearest 2x upsampling of top, in place; returns lateral.

    lateral: Tensor[N, C, 2H, 2W]; top: Tensor[N, C, H, W]. Each top pixel is
    added to its 2x2 block of lateral through a broadcast view, which is the
    same sum as F.interpolate(top, scale_factor=2, mode="nearest") + lateral
    without materialising the upsampled map (a full extra pass over the
    finest, largest level). Either memory format; other shapes fall back to
    interpolate.
    """
    n, c, h, w = lateral.shape[0], lateral.shape[1], lateral.shape[2], lateral.shape[3]
    if top.shape[2] * 2 != h or top.shape[3] * 2 != w:
        return lateral.add_(F.interpolate(top, scale_factor=2.0, mode="nearest"))
    if lateral.is_contiguous():
        lateral.view(n, c, h // 2, 2, w // 2, 2).add_(top[:, :, :, None, :, None])
    elif lateral.is_contiguous(memory_format=torch.channels_last):
        lateral.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c).add_(
            top.permute(0, 2, 3, 1)[:, :, None, :, None, :])
    else:
        lateral.add_(F.interpolate(top, scale_factor=2.0, mode="nearest"))
    return lateral


class FPN(Backbone):
    """FPN over `bottom_up`'s outputs `in_features` (finest first, strides a power of 2 apart).

    Children are named fpn_lateral{stage} and fpn_output{stage} (detectron2's
    names), plus bottom_up and top_block. fuse_type "sum" adds the top-down and
    lateral maps, "avg" averages them.
    """

    def __init__(self, bottom_up: Backbone, in_features: List[str], out_channels: int, norm: str = "",
                 top_block: nn.Module = None, fuse_type: str = "sum"):
        super().__init__()
        input_shapes = bottom_up.output_shape()
        for f in in_features:
            if f not in input_shapes:
                raise ValueError(f"FPN input {f!r} is not an output of the bottom-up backbone "
                                 f"({list(input_shapes)})")
        strides = [input_shapes[f].stride for f in in_features]
        for prev, cur in zip(strides[:-1], strides[1:]):
            if cur != 2 * prev:
                raise ValueError(f"FPN inputs must be one stride doubling apart, got strides {strides}")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got {fuse_type!r}")

        use_bias = norm == ""
        stages: List[int] = []
        for f, stride in zip(in_features, strides):
            stage = int(math.log2(stride))
            lateral = Conv2d(input_shapes[f].channels, out_channels, kernel_size=1, bias=use_bias,
                                  norm=get_norm(norm, out_channels))
            output = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1,
                                bias=use_bias, norm=get_norm(norm, out_channels))
            for conv in (lateral, output):
                nn.init.kaiming_uniform_(conv.weight, a=1)  # "c2_xavier_fill" of Detectron
                if conv.bias is not None:
                    nn.init.constant_(conv.bias, 0)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            stages.append(stage)
        self.top_block = top_block
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self._fuse_type = fuse_type

        self._out_feature_strides = {f"p{s}": 2 ** s for s in stages}
        if top_block is not None:
            last = stages[-1]
            for s in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2 ** s
        self._out_features = list(self._out_feature_strides.keys())
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x: Tensor[N, 3, H, W] (H, W multiples of size_divisibility) -> {"p2": ..., "p6": ...}."""
        bottom_up_features = self.bottom_up(x)
        # Children are walked in registration order, finest level first. Only the
        # convolutions have a `weight`: hasattr on a submodule is resolved when
        # scripting, so bottom_up and top_block are skipped at compile time
        # (isinstance is not reliable there for modules of different shapes).
        # The name tells a lateral from an output convolution.
        laterals: List[Tensor] = []
        for name, module in self.items():
            if hasattr(module, "weight"):
                if name.startswith("fpn_lateral"):
                    laterals.append(module(bottom_up_features[self.in_features[len(laterals)]]))

        # Top-down pathway, coarsest first.
        merged: List[Tensor] = [laterals[-1]]
        for lateral in laterals[-2::-1]:
            fused = add_upsampled_2x_(lateral, merged[0])
            if self._fuse_type == "avg":
                fused = fused / 2
            merged.insert(0, fused)

        results: List[Tensor] = []
        for name, module in self.items():
            if hasattr(module, "weight"):
                if name.startswith("fpn_output"):
                    results.append(module(merged[len(results)]))
        if self.top_block is not None:
            results.extend(self.top_block(results[-1]))
        return {name: r for name, r in zip(self._out_features, results)}


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet + FPN (+ p6 by max pooling) from MODEL.RESNETS.* and MODEL.FPN.*."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
