"""Configuration: detectron2's keys and defaults in an fvcore CfgNode.

    from mrcnn_plugin.config import get_cfg
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
"""

from .config import (
    CfgNode,
    ConfigKeyError,
    ConfigValueError,
    get_cfg,
    reset_unused_key_reports,
)
from .defaults import PLUGIN_KEYS, UNUSED_DETECTRON2_DEFAULTS, UNUSED_DETECTRON2_KEYS

__all__ = [
    "CfgNode",
    "ConfigKeyError",
    "ConfigValueError",
    "get_cfg",
    "reset_unused_key_reports",
    "UNUSED_DETECTRON2_DEFAULTS",
    "UNUSED_DETECTRON2_KEYS",
    "PLUGIN_KEYS",
]
