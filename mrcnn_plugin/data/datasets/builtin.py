"""Built-in dataset names, registered when `mrcnn_plugin.data` is imported.

COCO 2017 lives under $DETECTRON2_DATASETS (default "datasets", relative to
the working directory, as in detectron2):
    {root}/coco/annotations/{instances,person_keypoints}_{train,val}2017.json
    {root}/coco/{train,val}2017/
coco-mini (159 COCO 2017 images with the same file layout, for tests and
smoke runs) is found at $MRCNN_COCO_MINI, else <repo>/../shared/data/coco-mini,
else <repo>/shared/data/coco-mini. Registration never touches the disk; a
missing folder is reported when the dataset is loaded.
"""
import functools
import os
from pathlib import Path
from typing import Dict, List, Tuple

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import coco_instances_metadata, coco_person_keypoints_metadata
from .cityscapes import register_all_cityscapes
from .coco import load_coco_json

__all__ = ["register_all_builtin", "coco_mini_root", "datasets_root"]

# name -> (image folder, json file), both relative to the COCO folder.
_COCO_SPLITS: Dict[str, Tuple[str, str]] = {
    "coco_2017_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_2017_val": ("val2017", "annotations/instances_val2017.json"),
    "keypoints_coco_2017_train": ("train2017", "annotations/person_keypoints_train2017.json"),
    "keypoints_coco_2017_val": ("val2017", "annotations/person_keypoints_val2017.json"),
}
_COCO_MINI_SPLITS: Dict[str, Tuple[str, str]] = {
    "coco_mini_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_mini_val": ("val2017", "annotations/instances_val2017.json"),
    "keypoints_coco_mini_train": ("train2017", "annotations/person_keypoints_train2017.json"),
    "keypoints_coco_mini_val": ("val2017", "annotations/person_keypoints_val2017.json"),
}
_REPO_ROOT = Path(__file__).resolve().parents[3]  # .../<repo>/mrcnn_plugin/data/datasets/builtin.py


def datasets_root() -> str:
    """$DETECTRON2_DATASETS, default "datasets"."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def coco_mini_root() -> str:
    """The coco-mini folder: $MRCNN_COCO_MINI, else the first existing default, else the first default."""
    env = os.getenv("MRCNN_COCO_MINI")
    if env:
        return os.path.expanduser(env)
    candidates: List[Path] = [_REPO_ROOT.parent / "shared" / "data" / "coco-mini",
                              _REPO_ROOT / "shared" / "data" / "coco-mini"]
    for c in candidates:
        if c.is_dir():
            return str(c)
    return str(candidates[0])


def _load_coco_mini(json_file: str, image_root: str, name: str) -> List[dict]:
    """load_coco_json, with a message saying how to point at coco-mini when it is absent."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Dataset {name!r}: {json_file!r} not found. coco-mini is looked up at "
                                "$MRCNN_COCO_MINI, <repo>/../shared/data/coco-mini and "
                                "<repo>/shared/data/coco-mini")
    return load_coco_json(json_file, image_root, name)


def _metadata_for(name: str) -> Dict[str, object]:
    return coco_person_keypoints_metadata() if name.startswith("keypoints_") else coco_instances_metadata()


def register_all_builtin() -> None:
    """Registers the names above (those already registered are left alone)."""
    roots = [(_COCO_SPLITS, os.path.join(datasets_root(), "coco"), load_coco_json),
             (_COCO_MINI_SPLITS, coco_mini_root(), _load_coco_mini)]
    for splits, root, loader in roots:
        for name, (image_dir, json_rel) in splits.items():
            if name in DatasetCatalog:
                continue
            json_file, image_root = os.path.join(root, json_rel), os.path.join(root, image_dir)
            DatasetCatalog.register(name, functools.partial(loader, json_file, image_root, name))
            MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root,
                                          evaluator_type="coco", **_metadata_for(name))
    register_all_cityscapes(os.path.join(datasets_root(), "cityscapes"))
