"""`DatasetMapper`: one dataset record -> one model input dict.

Output (detectron2's format, what GeneralizedRCNN.forward reads):
    {"file_name", "image_id", "height", "width" (original size, ints),
     "image": uint8 Tensor[C, H, W] in cfg.INPUT.FORMAT order, resized/augmented,
     "instances" (training only): Instances(image_size=(H, W)) with gt_boxes,
        gt_classes, gt_masks (MODEL.MASK_ON; PolygonMasks or BitMasks per
        INPUT.MASK_FORMAT), gt_keypoints (MODEL.KEYPOINT_ON)}
"""
import copy
import logging
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .detection_utils import (annotations_to_instances, build_augmentation, check_image_size,
                              create_keypoint_hflip_indices, filter_empty_instances, read_image,
                              transform_instance_annotations)
from .transforms import Augmentation, apply_augmentations

__all__ = ["DatasetMapper"]

logger = logging.getLogger(__name__)


class DatasetMapper:
    """Callable record -> model input (see the module docstring), built from a config.

    In training, crowd annotations are removed, masks / keypoints dropped when
    their head is off, and instances left empty by the augmentation filtered
    out. An image that cannot be read returns None in training (the loader
    skips it; `num_unreadable` counts them) and raises at inference.
    """

    def __init__(self, cfg, is_train: bool = True, *, augmentations: Optional[List[Augmentation]] = None):
        self.is_train = is_train
        self.augmentations = build_augmentation(cfg, is_train) if augmentations is None else list(augmentations)
        self.image_format: str = cfg.INPUT.FORMAT
        self.use_instance_mask: bool = cfg.MODEL.MASK_ON
        self.instance_mask_format: str = cfg.INPUT.MASK_FORMAT
        self.use_keypoint: bool = cfg.MODEL.KEYPOINT_ON
        # A crop cuts masks, so the box is recomputed from what is left of the mask.
        self.recompute_boxes: bool = bool(is_train and cfg.INPUT.CROP.ENABLED and cfg.MODEL.MASK_ON)
        self.keypoint_hflip_indices: Optional[np.ndarray] = None
        if is_train and self.use_keypoint:
            self.keypoint_hflip_indices = create_keypoint_hflip_indices(cfg.DATASETS.TRAIN)
        self.num_unreadable = 0
        self.last_error: Optional[str] = None
        logger.info("DatasetMapper (%s): augmentations %s", "train" if is_train else "test", self.augmentations)

    def __call__(self, record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """record (see datasets/coco.py) -> model input dict, or None for an unreadable image in training."""
        record = copy.deepcopy(record)  # the transforms edit annotations in place
        try:
            image = read_image(record["file_name"], format=self.image_format)
        except OSError as e:
            if not self.is_train:
                raise
            # Counted here and reported by the train loader's periodic warning,
            # rather than one warning per image from every worker.
            self.num_unreadable += 1
            self.last_error = str(e)
            logger.debug("Skipping unreadable training image: %s", e)
            return None
        check_image_size(record, image)
        image, transforms = apply_augmentations(self.augmentations, image)
        image_size = image.shape[:2]
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        annos = record.pop("annotations", None)
        if not self.is_train:
            return record
        if annos is not None:
            record["instances"] = self._annotations_to_instances(annos, transforms, image_size)
        return record

    def _annotations_to_instances(self, annos: List[Dict[str, Any]], transforms, image_size) -> Any:
        """Non-crowd annotations, transformed, as Instances without empty ones."""
        kept = []
        for anno in annos:
            if anno.get("iscrowd", 0) != 0:
                continue
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
            kept.append(transform_instance_annotations(anno, transforms, image_size,
                                                       keypoint_hflip_indices=self.keypoint_hflip_indices))
        instances = annotations_to_instances(kept, image_size, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        return filter_empty_instances(instances)
