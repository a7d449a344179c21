"""Shapes: the project's embedded default dataset (synthetic shapes with masks and keypoints).

`generate` draws the images and writes COCO json; `datasets` registers the
splits `shapes_train` / `shapes_val` in the catalog. Importing this package
registers nothing: call `register_shapes()` (or import `shapes.builtin`).
"""
from .datasets import register_shapes
from .generate import CLASS_NAMES, KEYPOINT_NAMES, ShapeInstance, ShapeParams, generate_split, write_coco

__all__ = ["register_shapes", "generate_split", "write_coco", "ShapeParams", "ShapeInstance", "CLASS_NAMES",
           "KEYPOINT_NAMES"]
