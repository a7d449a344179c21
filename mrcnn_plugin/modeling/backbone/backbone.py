"""The contract every backbone follows."""
from typing import Dict

from torch import nn

from ...layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.ModuleDict):
    """A network from an image batch to named feature maps: Tensor[N, 3, H, W] -> Dict[str, Tensor].

    Subclasses set `_out_features` (names, finest first), `_out_feature_strides`
    and `_out_feature_channels`. It is a ModuleDict so that a backbone made of
    named stages (stem, res2, ...) can walk them in a scriptable loop while
    keeping detectron2's parameter names.
    """

    def __init__(self):
        super().__init__()
        self._out_features = []
        self._out_feature_strides: Dict[str, int] = {}
        self._out_feature_channels: Dict[str, int] = {}

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (the coarsest stride for FPN); 0 means any size."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name],
                                stride=self._out_feature_strides[name]) for name in self._out_features}
