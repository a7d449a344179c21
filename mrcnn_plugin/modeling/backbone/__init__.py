"""Backbones: image batch -> named feature maps."""
from ...layers import ShapeSpec
from ...registry import BACKBONE_REGISTRY, build_from_registry
from .backbone import Backbone
from .fpn import FPN, LastLevelMaxPool, build_resnet_fpn_backbone
from .resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet, build_resnet_backbone, make_stage

__all__ = ["Backbone", "FPN", "LastLevelMaxPool", "ResNet", "BasicStem", "BasicBlock", "BottleneckBlock",
           "make_stage", "build_backbone", "build_resnet_backbone", "build_resnet_fpn_backbone"]


def build_backbone(cfg, input_shape: ShapeSpec = None) -> Backbone:
    """Builds MODEL.BACKBONE.NAME for inputs of len(MODEL.PIXEL_MEAN) channels."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    return build_from_registry(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, cfg, input_shape)
