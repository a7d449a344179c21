"""Data structures passed between stages: boxes, instances, masks, keypoints, image batches."""
from .boxes import Boxes, box_area, clip_boxes, nonempty_boxes, pairwise_ioa, pairwise_iou
from .image_list import ImageList, pad_images
from .instances import Instances
from .keypoints import Keypoints, keypoints_to_heatmap
from .masks import BitMasks, PolygonMasks, polygons_to_bitmask, rasterize_polygons_within_box

__all__ = ["Boxes", "box_area", "clip_boxes", "nonempty_boxes", "pairwise_ioa", "pairwise_iou",
           "ImageList", "pad_images", "Instances", "Keypoints", "keypoints_to_heatmap", "BitMasks",
           "PolygonMasks", "polygons_to_bitmask", "rasterize_polygons_within_box"]
