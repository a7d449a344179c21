"""ResNet and ResNeXt (He et al. 2016; Xie et al. 2017) with detectron2's layout and names.

Stages are named stem, res2, res3, res4, res5; res{k} has stride 2^k.
"""
from typing import Dict, List, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, get_norm
from ...registry import BACKBONE_REGISTRY
from .backbone import Backbone

__all__ = ["BasicStem", "BasicBlock", "BottleneckBlock", "ResNet", "make_stage", "build_resnet_backbone"]

_BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                     152: [3, 8, 36, 3]}


def _freeze(module: nn.Module) -> nn.Module:
    """Stops gradients to the module's parameters and freezes its BatchNorm statistics."""
    for p in module.parameters():
        p.requires_grad = False
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def _projection_shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[nn.Module]:
    """1x1 convolution + norm matching a block's output shape, or None when the identity fits."""
    if in_channels == out_channels:
        return None
    return Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                  norm=get_norm(norm, out_channels))


class BasicStem(nn.Module):
    """7x7 convolution with stride 2, then 3x3 max pooling with stride 2: stride 4 overall."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = 4
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C, H, W] -> Tensor[N, out_channels, H/4, W/4]."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        # In place: a fresh full-size map per block would cost page faults as well as the pass.
        out += shortcut
        return F.relu_(out)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, optionally dilated), 1x1 expand, plus residual.

    stride_in_1x1=True puts the stride in the first 1x1 convolution (MSRA
    ResNet, detectron2's ImageNet weights); False puts it in the 3x3 (torchvision).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "BN", stride_in_1x1: bool = False, dilation: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3,
                            padding=1 * dilation, bias=False, groups=num_groups, dilation=dilation,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        # In place: a fresh full-size map per block would cost page faults as well as the pass.
        out += shortcut
        return F.relu_(out)


def make_stage(block_class, num_blocks: int, *, in_channels: int, out_channels: int, first_stride: int,
               **kwargs) -> nn.Sequential:
    """A stage of `num_blocks` blocks; only the first one changes stride and channels."""
    blocks = []
    for i in range(num_blocks):
        blocks.append(block_class(in_channels=in_channels, out_channels=out_channels,
                                  stride=first_stride if i == 0 else 1, **kwargs))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class ResNet(Backbone):
    """Stem followed by stages res2..res5 (only as many as the outputs need).

    forward returns the maps named in out_features. Stages before freeze_at
    (1 = stem, 2 = stem and res2, ...) are frozen.
    """

    def __init__(self, stem: nn.Module, stages: Dict[str, nn.Sequential], out_features: List[str],
                 freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        strides = {"stem": stem.stride}
        channels = {"stem": stem.out_channels}
        stride = stem.stride
        for name, stage in stages.items():
            self.add_module(name, stage)
            for block in stage:
                stride *= block.stride
            strides[name] = stride
            channels[name] = stage[-1].out_channels
        known = list(strides.keys())
        for f in out_features:
            if f not in known:
                raise ValueError(f"ResNet output {f!r} is not one of its stages {known}")
        self._out_features = list(out_features)
        self._out_feature_strides = {f: strides[f] for f in out_features}
        self._out_feature_channels = {f: channels[f] for f in out_features}
        self.freeze(freeze_at)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x: Tensor[N, C, H, W] -> {name: Tensor[N, C_name, H / stride, W / stride]}."""
        if x.dim() != 4:
            raise ValueError(f"ResNet takes Tensor[N, C, H, W], got {x.dim()} dimensions")
        outputs: Dict[str, Tensor] = {}
        for name, stage in self.items():
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freezes the first `freeze_at` stages (stem counts as 1)."""
        for idx, (_, stage) in enumerate(self.items(), start=1):
            if idx <= freeze_at:
                _freeze(stage)
        return self


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet from MODEL.RESNETS.*, MODEL.BACKBONE.FREEZE_AT and the input channels."""
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm)
    depth = r.DEPTH
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_DEPTH)}, got {depth}")
    out_features = list(r.OUT_FEATURES)
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    if depth in (18, 34):
        if out_channels != 64:
            raise ValueError("MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for ResNet-18/34")
        if r.RES5_DILATION != 1:
            raise ValueError("MODEL.RESNETS.RES5_DILATION must be 1 for ResNet-18/34")
        if r.NUM_GROUPS != 1:
            raise ValueError("MODEL.RESNETS.NUM_GROUPS must be 1 for ResNet-18/34")

    stage_index = {"stem": 1, "res2": 2, "res3": 3, "res4": 4, "res5": 5}
    max_stage = max(stage_index[f] for f in out_features)
    stages: Dict[str, nn.Sequential] = {}
    for idx, num_blocks in zip(range(2, max_stage + 1), _BLOCKS_PER_DEPTH[depth]):
        dilation = r.RES5_DILATION if idx == 5 else 1
        first_stride = 1 if idx == 2 or (idx == 5 and dilation == 2) else 2
        if depth in (18, 34):
            stage = make_stage(BasicBlock, num_blocks, in_channels=in_channels, out_channels=out_channels,
                               first_stride=first_stride, norm=norm)
        else:
            stage = make_stage(BottleneckBlock, num_blocks, in_channels=in_channels,
                               out_channels=out_channels, first_stride=first_stride,
                               bottleneck_channels=bottleneck_channels, num_groups=r.NUM_GROUPS, norm=norm,
                               stride_in_1x1=r.STRIDE_IN_1X1, dilation=dilation)
            bottleneck_channels *= 2
        stages[f"res{idx}"] = stage
        in_channels = out_channels
        out_channels *= 2
    return ResNet(stem, stages, out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
