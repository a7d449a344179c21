"""Small utilities that sit beside the pipeline: drawing detections on images.

    from mrcnn_plugin.utils import draw_instances, save_image
    picture = draw_instances(image_rgb, boxes, scores, classes, class_names, masks=masks)
    save_image(picture, "out.png")
"""
from .visualizer import draw_instances, instance_color, save_image, skeleton_from_names

__all__ = ["draw_instances", "save_image", "instance_color", "skeleton_from_names"]
