"""COCO-format json -> dataset records (detectron2's format), with bad annotations dropped.

A record is one image:
    {"file_name": str (image_root joined with the json's file_name),
     "height": int, "width": int, "image_id": int (the json's image id),
     "annotations": [
        {"bbox": [x, y, w, h] absolute pixels, "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": int, contiguous 0..K-1 (COCO ids sorted ascending),
         "iscrowd": 0 or 1,
         "segmentation": list of polygons [x0, y0, x1, y1, ...] or an RLE dict,
         "keypoints": flat [x, y, v] * K, x and y of labelled points + 0.5,
         ...extra keys asked for}, ...]}
"""
import contextlib
import functools
import io
import logging
import os
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pycocotools.mask as mask_util
from iopath.common.file_io import g_pathmgr
from pycocotools.coco import COCO

from ..box_mode import BoxMode
from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import connection_rules_from_skeleton, keypoint_flip_map_from_names

__all__ = ["load_coco_json", "register_coco_instances"]

logger = logging.getLogger(__name__)
# iopath's shared manager: handlers registered elsewhere (e.g. for URLs) apply here too.
_path_manager = g_pathmgr

# Why an annotation is dropped; the values are the words of the warning.
_DROP_REASONS = {
    "bad_bbox": "a missing or malformed bbox",
    "empty_box": "a box of zero or negative width/height",
    "unknown_category": "a category_id not in the json's categories",
    "no_valid_polygon": "no polygon of at least 3 points",
    "rle_size_mismatch": "an RLE mask whose size is not its image's height x width",
    "bad_keypoints": "keypoints whose length is not a multiple of 3",
}


def _ids_text(ids: Sequence[Any], limit: int = 10) -> str:
    """'ids 3, 7, 9' (the first `limit` of them) for a warning."""
    shown = ", ".join(str(i) for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{'id' if len(ids) == 1 else 'ids'} {shown}{more}"


def _read_coco_api(json_file: str, dataset_name: Optional[str]) -> COCO:
    """Parses the json with pycocotools (its progress prints silenced)."""
    if not _path_manager.exists(json_file):
        raise FileNotFoundError(f"COCO json file {json_file!r} not found"
                                + (f" (dataset {dataset_name!r})" if dataset_name else ""))
    local = _path_manager.get_local_path(json_file)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_api = COCO(local)
    logger.info("Loaded %s in %.2f s", json_file, time.perf_counter() - start)
    return coco_api


def _set_metadata(dataset_name: str, coco_api: COCO, json_file: str, image_root: str) -> None:
    """thing_classes, the id map and, for keypoint sets, keypoint names / flip map / skeleton."""
    cat_ids = sorted(coco_api.getCatIds())
    cats = coco_api.loadCats(cat_ids)
    meta = MetadataCatalog.get(dataset_name)
    meta.set(thing_classes=[c["name"] for c in cats],
             thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(cat_ids)},
             json_file=json_file, image_root=image_root)
    if meta.get("evaluator_type") is None:  # a registration may have chosen another evaluator
        meta.evaluator_type = "coco"
    with_keypoints = [c for c in cats if c.get("keypoints")]
    if with_keypoints:
        # A registration may give its own keypoint metadata (e.g. a flip map that the
        # names do not imply); the json fills in only what is missing.
        names = tuple(with_keypoints[0]["keypoints"])
        if meta.get("keypoint_names") is None:
            meta.set(keypoint_names=names)
        if meta.get("keypoint_flip_map") is None:
            meta.set(keypoint_flip_map=keypoint_flip_map_from_names(names))
        if with_keypoints[0].get("skeleton") and meta.get("keypoint_connection_rules") is None:
            meta.set(keypoint_connection_rules=connection_rules_from_skeleton(
                names, with_keypoints[0]["skeleton"]))


def _clean_segmentation(segm: Any) -> Tuple[Any, int]:
    """Valid part of a json segmentation -> (segmentation or None if nothing valid, polygons removed).

    Polygons need an even number of coordinates and at least 3 points; an RLE
    with uncompressed (list) counts is compressed so all RLEs look the same.
    """
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        return segm, 0
    kept = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return (kept if kept else None), len(segm) - len(kept)


def _labelled_keypoints_to_pixel_centres(keypoints: List[float]) -> List[float]:
    """COCO keypoints are integer pixel indices; +0.5 puts x and y at the pixel centre.

    Only labelled points (v > 0) move: unlabelled ones stay (0, 0, 0), COCO's
    convention for "absent" (detectron2 shifts them too; nothing reads them).
    """
    out = list(keypoints)
    for i in range(0, len(out), 3):
        if out[i + 2] > 0:
            out[i] += 0.5
            out[i + 1] += 0.5
    return out


def load_coco_json(json_file: str, image_root: str, dataset_name: Optional[str] = None,
                   extra_annotation_keys: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Reads a COCO instances / person keypoints json into records (see the module docstring).

    dataset_name: when given, its metadata gets thing_classes, the id map, the
    json and image root, evaluator_type "coco" and keypoint metadata. Bad
    annotations (see `_DROP_REASONS`) are dropped and reported in one warning
    that names the file and the annotation ids.
    """
    coco_api = _read_coco_api(json_file, dataset_name)
    if dataset_name is not None:
        _set_metadata(dataset_name, coco_api, json_file, image_root)
    cat_ids = sorted(coco_api.getCatIds())
    id_map = {cid: i for i, cid in enumerate(cat_ids)}

    img_ids = sorted(coco_api.imgs.keys())
    anns_per_image = [coco_api.imgToAnns.get(img_id, []) for img_id in img_ids]
    _check_annotation_ids(json_file, coco_api, anns_per_image)

    ann_keys = ["iscrowd", "bbox", "keypoints", "category_id"] + list(extra_annotation_keys or [])
    dropped: Dict[str, List[Any]] = defaultdict(list)
    trimmed: List[Any] = []  # annotations kept after removing some of their polygons
    records = []
    for img_id, anns in zip(img_ids, anns_per_image):
        img = coco_api.imgs[img_id]
        record = {"file_name": os.path.join(image_root, img["file_name"]),
                  "height": img["height"], "width": img["width"], "image_id": img_id}
        objs = []
        for anno in anns:
            obj, reason, n_removed = _convert_annotation(anno, ann_keys, id_map, json_file,
                                                         (img["height"], img["width"]))
            if reason is not None:
                dropped[reason].append(anno.get("id"))
                continue
            if n_removed:
                trimmed.append(anno.get("id"))
            objs.append(obj)
        record["annotations"] = objs
        records.append(record)
    _warn_dropped(json_file, dropped, trimmed, sum(len(a) for a in anns_per_image))
    logger.info("Loaded %d images with %d annotations from %s", len(records),
                sum(len(r["annotations"]) for r in records), json_file)
    return records


def _check_annotation_ids(json_file: str, coco_api: COCO, anns_per_image: List[List[dict]]) -> None:
    """Unique annotation ids (the evaluator and the warnings name annotations by id)."""
    n_matched = sum(len(a) for a in anns_per_image)
    if n_matched < len(coco_api.dataset.get("annotations", [])):
        logger.warning("%s has %d annotations but only %d belong to an image listed in the file",
                       json_file, len(coco_api.dataset["annotations"]), n_matched)
    ids = [a.get("id") for anns in anns_per_image for a in anns]
    if len(set(ids)) != len(ids):
        seen, dups = set(), []
        for i in ids:
            if i in seen:
                dups.append(i)
            seen.add(i)
        raise ValueError(f"Annotation ids in {json_file!r} are not unique: {_ids_text(dups)} repeat")


def _convert_annotation(anno: Dict[str, Any], ann_keys: List[str], id_map: Dict[int, int],
                        json_file: str, image_size: Tuple[int, int]
                        ) -> Tuple[Optional[Dict[str, Any]], Optional[str], int]:
    """One json annotation of an image of image_size (height, width) -> (record annotation, None,
    polygons removed) or (None, drop reason, 0)."""
    if anno.get("ignore", 0) != 0:
        raise ValueError(f"Annotation id {anno.get('id')} in {json_file!r} sets \"ignore\", which "
                         "COCO-format loading does not support (use iscrowd)")
    obj = {key: anno[key] for key in ann_keys if key in anno}
    bbox = obj.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, "bad_bbox", 0
    if not (bbox[2] > 0 and bbox[3] > 0):
        return None, "empty_box", 0
    if obj.get("category_id") not in id_map:
        return None, "unknown_category", 0
    obj["category_id"] = id_map[obj["category_id"]]
    obj["bbox_mode"] = BoxMode.XYWH_ABS
    n_removed = 0
    segm = anno.get("segmentation")
    if segm:  # an empty or absent segmentation means "no mask", as in detectron2
        # An RLE of another size cannot be placed on the image (training would stop at its resize).
        if isinstance(segm, dict) and [int(s) for s in segm.get("size", ())] != [int(v) for v in image_size]:
            return None, "rle_size_mismatch", 0
        segm, n_removed = _clean_segmentation(segm)
        if segm is None:
            return None, "no_valid_polygon", 0
        obj["segmentation"] = segm
    keypoints = obj.get("keypoints")
    if keypoints:
        if len(keypoints) % 3 != 0:
            return None, "bad_keypoints", 0
        obj["keypoints"] = _labelled_keypoints_to_pixel_centres(keypoints)
    return obj, None, n_removed


def _warn_dropped(json_file: str, dropped: Dict[str, List[Any]], trimmed: List[Any], total: int) -> None:
    """One warning for the whole file: how many annotations were dropped, why, and their ids."""
    n_dropped = sum(len(v) for v in dropped.values())
    if n_dropped:
        parts = [f"{len(ids)} with {_DROP_REASONS[r]} ({_ids_text(ids)})" for r, ids in dropped.items()]
        logger.warning("%s: dropped %d of %d annotations: %s", json_file, n_dropped, total, "; ".join(parts))
    if trimmed:
        logger.warning("%s: removed polygons of fewer than 3 points from %d annotations (%s); "
                       "their other polygons are kept", json_file, len(trimmed), _ids_text(trimmed))


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Registers a COCO-format json (instances or keypoints) as dataset `name`.

    metadata: extra fields for MetadataCatalog (may be empty; it may override
    evaluator_type, default "coco"); json_file and image_root are set here,
    thing_classes and the id map when the json is loaded.
    """
    DatasetCatalog.register(name, functools.partial(load_coco_json, json_file, image_root, name))
    fields = {"evaluator_type": "coco", **metadata, "json_file": json_file, "image_root": image_root}
    MetadataCatalog.get(name).set(**fields)
