"""Registers the Shapes splits in the project's dataset catalog, generating them on first use.

    from shapes.datasets import register_shapes
    register_shapes()          # -> {"shapes_train": <json>, "shapes_val": <json>}

The splits are written once to a cache folder, `$MRCNN_SHAPES_DIR` or
`<repo>/outputs/shapes_data/`, in a sub-folder named by everything that
decides its content (image counts, seed, generator parameters and version),
so changing any of them generates a new folder instead of reusing stale data.
A split folder holds `images/*.png` and `annotations.json` (COCO format with
RLE masks and 4 keypoints per instance); both names load through the
project's COCO loader, for Mask R-CNN (masks) and Keypoint R-CNN (keypoints)
alike: the mapper drops the annotation kinds a config does not train.

Generation happens at registration, not when the records are first read,
because an evaluator opens the json named in the metadata as soon as it is built.
"""
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

from mrcnn_plugin.data import DatasetCatalog, MetadataCatalog, register_coco_instances

from .generate import (CLASS_NAMES, KEYPOINT_FLIP_MAP, KEYPOINT_NAMES, SKELETON, ShapeParams, generate_split,
                       write_coco)

__all__ = ["DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "DEFAULT_SEED", "default_root", "dataset_dir",
           "ensure_generated", "shapes_metadata", "register_shapes"]

logger = logging.getLogger(__name__)

DEFAULT_NUM_TRAIN = 2000
DEFAULT_NUM_VAL = 200
DEFAULT_SEED = 0
_SPLITS = ("train", "val")
_REPO_ROOT = Path(__file__).resolve().parents[3]  # <repo>/projects/Shapes/shapes/datasets.py


def default_root() -> Path:
    """$MRCNN_SHAPES_DIR, else <repo>/outputs/shapes_data (git-ignored)."""
    env = os.getenv("MRCNN_SHAPES_DIR")
    return Path(os.path.expanduser(env)) if env else _REPO_ROOT / "outputs" / "shapes_data"


def dataset_dir(root: os.PathLike, num_train: int, num_val: int, seed: int, params: ShapeParams) -> Path:
    """The cache folder of one configuration: every input to the generator is in its name."""
    return Path(root) / f"shapes_train{num_train}_val{num_val}_seed{seed}_{params.digest()}"


def _split_seed(seed: int, split: str) -> int:
    """Distinct generator seeds per split (2*seed, 2*seed+1): val never repeats a train image."""
    return 2 * seed + _SPLITS.index(split)


def _is_complete(folder: Path) -> bool:
    """write_coco writes the json last, so both jsons present means both splits are complete."""
    return all((folder / split / "annotations.json").is_file() for split in _SPLITS)


def ensure_generated(root: Optional[os.PathLike] = None, num_train: int = DEFAULT_NUM_TRAIN,
                     num_val: int = DEFAULT_NUM_VAL, seed: int = DEFAULT_SEED,
                     params: Optional[ShapeParams] = None) -> Path:
    """The dataset folder for these arguments, generating both splits first when missing.

    Splits are written to a temporary sibling folder renamed into place at the
    end, so an interrupted run leaves nothing that looks complete and two
    processes generating at once (e.g. distributed ranks) both end with one
    complete folder.
    """
    params = params or ShapeParams()
    folder = dataset_dir(root if root is not None else default_root(), num_train, num_val, seed, params)
    if _is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        for split, count in zip(_SPLITS, (num_train, num_val)):
            images, instances = generate_split(count, _split_seed(seed, split), params)
            write_coco(tmp / split, images, instances,
                       info={"split": split, "seed": seed, "params_digest": params.digest()})
        if folder.exists() and not _is_complete(folder):
            shutil.rmtree(folder)  # a half-written folder from an older, non-atomic writer
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_complete(folder):  # not another process winning the race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Generated Shapes (%d train + %d val images) in %s in %.1f s", num_train, num_val, folder,
                time.perf_counter() - start)
    return folder


def shapes_metadata() -> Dict[str, object]:
    """Metadata known before the json is read (the keypoint mapper needs the flip map when built).

    Equal to what the COCO loader derives from the json's categories, so the
    two never disagree (Metadata refuses to change a field).
    """
    names = list(KEYPOINT_NAMES)
    return {"thing_classes": list(CLASS_NAMES),
            "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(CLASS_NAMES))},
            "keypoint_names": tuple(names),
            "keypoint_flip_map": KEYPOINT_FLIP_MAP,
            "keypoint_connection_rules": tuple((names[a - 1], names[b - 1]) for a, b in SKELETON),
            "evaluator_type": "coco"}


def _register_split(name: str, split_dir: Path) -> None:
    """Registers one split; re-registering the same folder is a no-op, another folder replaces it."""
    json_file, image_root = str(split_dir / "annotations.json"), str(split_dir / "images")
    if name in DatasetCatalog:
        if MetadataCatalog.get(name).get("json_file") == json_file:
            return
        logger.info("Dataset %r is re-registered from %s", name, json_file)
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)  # fields of an older registration would refuse the new values
    register_coco_instances(name, shapes_metadata(), json_file, image_root)


def register_shapes(root: Optional[os.PathLike] = None, num_train: int = DEFAULT_NUM_TRAIN,
                    num_val: int = DEFAULT_NUM_VAL, seed: int = DEFAULT_SEED, prefix: str = "shapes",
                    params: Optional[ShapeParams] = None) -> Dict[str, str]:
    """Generates the splits if needed and registers `{prefix}_train` and `{prefix}_val`.

    root: cache folder (default `default_root()`); prefix: the dataset names'
    prefix, so tests can register small splits without touching "shapes_*".
    Returns {dataset name: annotations json}.
    """
    folder = ensure_generated(root, num_train, num_val, seed, params)
    registered = {}
    for split in _SPLITS:
        name = f"{prefix}_{split}"
        _register_split(name, folder / split)
        registered[name] = str(folder / split / "annotations.json")
    return registered
