"""Checkpoints: loading detectron2, Detectron (Caffe2) and torchvision weights, writing them back.

- `DetectionCheckpointer`: fvcore's Checkpointer for this package's models; reads every
  format below, reports problems in one `LoadReport` table, saves atomically.
- `read_checkpoint`: any supported file -> {"model": detectron2-named tensors, ...}.
- `save_pth`, `save_model_zoo_pkl`, `save_detectron_pkl`: write a model / state_dict.
- `convert_torchvision`, `convert_detectron`, `convert_detectron2`, `convert_checkpoint`:
  offline conversion (the `mrcnn convert` command).

`.pth` files load with torch.load(weights_only=True); `.pkl` files with a restricted
unpickler that only rebuilds numpy arrays and plain containers (`safe_pickle`).
"""
from .convert import SOURCES, convert_checkpoint, convert_detectron, convert_detectron2, convert_torchvision
from .detection_checkpoint import DetectionCheckpointer
from .detectron_names import detectron2_to_detectron, detectron_to_detectron2
from .formats import (CheckpointError, atomic_write, read_checkpoint, save_detectron_pkl, save_model_zoo_pkl,
                      save_pth)
from .report import LoadReport, match_by_suffix
from .safe_pickle import RestrictedUnpickler, UnsafePickleError, load_pickle
from .torchvision_names import TORCHVISION_KINDS, torchvision_detection_to_detectron2, torchvision_resnet_to_detectron2

__all__ = [
    "DetectionCheckpointer", "LoadReport", "CheckpointError", "UnsafePickleError", "RestrictedUnpickler",
    "read_checkpoint", "load_pickle", "atomic_write", "save_pth", "save_model_zoo_pkl", "save_detectron_pkl",
    "convert_torchvision", "convert_detectron", "convert_detectron2", "convert_checkpoint", "SOURCES",
    "detectron_to_detectron2", "detectron2_to_detectron", "torchvision_detection_to_detectron2",
    "torchvision_resnet_to_detectron2", "match_by_suffix", "TORCHVISION_KINDS",
]
