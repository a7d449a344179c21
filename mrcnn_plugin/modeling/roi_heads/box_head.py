"""Box heads: ROI features Tensor[R, C, S, S] -> a feature vector per ROI."""
from typing import List

import torch
from torch import Tensor, nn

from ...layers import Conv2d, ShapeSpec, get_norm
from ...registry import ROI_BOX_HEAD_REGISTRY, build_from_registry

__all__ = ["FastRCNNConvFCHead", "build_box_head"]


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCHead(nn.Sequential):
    """Optional 3x3 convolutions (conv1, conv2, ...), then fully connected layers (fc1, fc2, ...),
    each followed by ReLU. The FPN default is two 1024-d fully connected layers."""

    def __init__(self, input_shape: ShapeSpec, *, conv_dims: List[int], fc_dims: List[int], conv_norm: str = ""):
        super().__init__()
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("A box head needs at least one conv or fc layer (MODEL.ROI_BOX_HEAD.NUM_CONV/NUM_FC)")
        channels, height, width = input_shape.channels, input_shape.height, input_shape.width
        for k, conv_dim in enumerate(conv_dims):
            conv = Conv2d(channels, conv_dim, kernel_size=3, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, conv_dim), activation=nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # "c2_msra_fill"
            if conv.bias is not None:
                nn.init.constant_(conv.bias, 0)
            self.add_module(f"conv{k + 1}", conv)
            channels = conv_dim
        in_features = channels * height * width
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(in_features, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)  # "c2_xavier_fill"
            nn.init.constant_(fc.bias, 0)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU(inplace=True))
            in_features = fc_dim
        self._output_size = (fc_dims[-1],) if fc_dims else (channels, height, width)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "FastRCNNConvFCHead":
        b = cfg.MODEL.ROI_BOX_HEAD
        return cls(input_shape, conv_dims=[b.CONV_DIM] * b.NUM_CONV, fc_dims=[b.FC_DIM] * b.NUM_FC,
                   conv_norm=b.NORM)

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> Tensor[R, FC_DIM] (or conv features when there are no fc layers)."""
        for layer in self:
            x = layer(x)
        return x

    def output_shape(self) -> ShapeSpec:
        """Shape of the per-ROI output: a vector of FC_DIM, or the conv feature map."""
        o = self._output_size
        if len(o) == 1:
            return ShapeSpec(channels=o[0])
        return ShapeSpec(channels=o[0], height=o[1], width=o[2])


def build_box_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Builds MODEL.ROI_BOX_HEAD.NAME."""
    return build_from_registry(ROI_BOX_HEAD_REGISTRY, cfg.MODEL.ROI_BOX_HEAD.NAME, cfg, input_shape)
