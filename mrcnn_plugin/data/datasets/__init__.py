"""Dataset loaders (COCO-format json) and the built-in dataset names."""
from .builtin import coco_mini_root, datasets_root, register_all_builtin
from .builtin_meta import COCO_CATEGORIES, COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON
from .cityscapes import load_cityscapes_instances, register_cityscapes_instances
from .coco import load_coco_json, register_coco_instances

__all__ = ["load_coco_json", "register_coco_instances", "register_all_builtin", "coco_mini_root",
           "datasets_root", "COCO_CATEGORIES", "COCO_PERSON_KEYPOINT_NAMES", "COCO_PERSON_SKELETON"]

register_all_builtin()
