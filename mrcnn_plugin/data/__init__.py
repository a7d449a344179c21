"""Data pipeline: dataset catalog and loaders, per-image mapping and augmentation, samplers.

    from mrcnn_plugin.data import build_detection_train_loader, DatasetCatalog
    loader = build_detection_train_loader(cfg)      # endless batches of model inputs
    batch = next(iter(loader))                      # list of dicts, see dataset_mapper.py

Importing this package registers the built-in datasets (coco_2017_*,
keypoints_coco_2017_*, coco_mini_*, keypoints_coco_mini_*).
"""
from . import transforms
from .box_mode import BoxMode
from .build import (TrainLoader, build_detection_test_loader, build_detection_train_loader,
                    get_detection_dataset_dicts)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .dataset_mapper import DatasetMapper
from .datasets import load_coco_json, register_coco_instances
from .detection_utils import (ImageReadError, SizeMismatchError, annotations_to_instances, build_augmentation,
                              check_image_size, create_keypoint_hflip_indices, filter_empty_instances,
                              read_image, transform_instance_annotations)
from .samplers import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = [
    "BoxMode", "DatasetCatalog", "MetadataCatalog", "Metadata", "load_coco_json", "register_coco_instances",
    "read_image", "check_image_size", "transform_instance_annotations", "annotations_to_instances",
    "filter_empty_instances", "create_keypoint_hflip_indices", "build_augmentation", "ImageReadError",
    "SizeMismatchError", "DatasetMapper", "TrainingSampler", "RepeatFactorTrainingSampler", "InferenceSampler",
    "get_detection_dataset_dicts", "build_detection_train_loader", "build_detection_test_loader", "TrainLoader",
    "transforms",
]
