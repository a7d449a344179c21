"""Cityscapes fine instance segmentation -> dataset records (detectron2's format).

Official layout (cityscapesscripts' names), one folder per city:

    {root}/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json
    {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png
    {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Classes come from cityscapesscripts' label table: the 8 labels with instances
that count in evaluation (person, rider, car, truck, bus, train, motorcycle,
bicycle), contiguous ids 0..7 in the table's order. An instanceIds pixel holds
label_id * 1000 + instance for an individual object, or the bare label id for a
group ("cargroup") or a class without instances.

A record:
    {"file_name": the leftImg8bit png, "image_id": its base name (str),
     "height": int, "width": int,
     "annotations": [
        {"bbox": [x0, y0, x1, y1] (BoxMode.XYXY_ABS) around the object's visible pixels,
         "bbox_mode": BoxMode.XYXY_ABS, "category_id": contiguous id 0..7,
         "iscrowd": 1 for a group region, else 0,
         "segmentation": polygons [[x0, y0, x1, y1, ...], ...] or a COCO RLE dict}, ...]}

Two sources, the same objects:

* from_json=True (default, what training uses): the polygons json is rasterised
  with cityscapesscripts' own `createInstanceImage` (objects drawn in file order,
  a later one covering an earlier one, exactly how the official instanceIds.png
  is made), and each thing object's visible pixels are traced back to polygons
  (scikit-image marching squares along pixel edges) that rasterise to those
  pixels. detectron2 resolves the overlaps in the same order with shapely
  polygon differences instead, and fills holes (an object seen around another
  one), which COCO polygons cannot express; here such a region is cut into
  hole-free pieces, so the mask keeps its hole.
* from_json=False: the instanceIds png is read; masks become COCO RLE.

Boxes are the extent of the visible pixels in continuous coordinates (pixel i
spans [i, i + 1)), which is also the bounds of the traced polygons; detectron2's
png path uses (xmin, ymin, xmax, ymax) of pixel indices, one pixel smaller.

`to_polygons` chooses the segmentation format independently of the source
(default: polygons from json, RLE from png). INPUT.MASK_FORMAT "polygon" needs
polygons; "bitmask" takes either.
"""
import contextlib
import functools
import io
import logging
import multiprocessing as mp
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import g_pathmgr
from PIL import Image
from skimage import measure

from ..box_mode import BoxMode
from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "CITYSCAPES_THING_CLASSES",
    "CITYSCAPES_THING_LABEL_IDS",
    "cityscapes_instances_metadata",
    "load_cityscapes_instances",
    "mask_to_polygons",
    "register_cityscapes_instances",
    "register_all_cityscapes",
]

logger = logging.getLogger(__name__)
_path_manager = g_pathmgr


def _thing_labels() -> List[Any]:
    """cityscapesscripts' Label tuples of the evaluated instance classes, in table order."""
    from cityscapesscripts.helpers.labels import labels

    return [label for label in labels if label.hasInstances and not label.ignoreInEval]


CITYSCAPES_THING_CLASSES: Tuple[str, ...] = tuple(label.name for label in _thing_labels())
CITYSCAPES_THING_LABEL_IDS: Tuple[int, ...] = tuple(label.id for label in _thing_labels())
# cityscapes label id -> contiguous class id
_LABEL_ID_TO_CONTIGUOUS: Dict[int, int] = {lid: i for i, lid in enumerate(CITYSCAPES_THING_LABEL_IDS)}

_IMAGE_SUFFIX = "_leftImg8bit.png"
_GT_SUFFIXES = {"instance": "_gtFine_instanceIds.png", "label": "_gtFine_labelIds.png",
                "json": "_gtFine_polygons.json"}
_INSTANCE_ID_BASE = 1000   # instanceIds pixel = label_id * 1000 + instance number
_PARALLEL_MIN_IMAGES = 64  # below this, worker processes cost more than they save

# name -> (image folder, gt folder), relative to the cityscapes root.
_CITYSCAPES_SPLITS: Dict[str, Tuple[str, str]] = {
    f"cityscapes_fine_instance_seg_{split}": (f"leftImg8bit/{split}", f"gtFine/{split}")
    for split in ("train", "val", "test")
}


def cityscapes_instances_metadata() -> Dict[str, Any]:
    """Metadata of the instance datasets: class names and both directions of the id map."""
    return {
        "thing_classes": list(CITYSCAPES_THING_CLASSES),
        # detectron2's key: dataset (cityscapes label) id -> contiguous id
        "thing_dataset_id_to_contiguous_id": dict(_LABEL_ID_TO_CONTIGUOUS),
        # contiguous id -> cityscapes label id, what the evaluator writes
        "thing_contiguous_id_to_label_id": dict(enumerate(CITYSCAPES_THING_LABEL_IDS)),
        "evaluator_type": "cityscapes_instance",
    }


# ---------------------------------------------------------------- finding the files


def _find_cityscapes_files(image_dir: str, gt_dir: str, needed: str) -> List[Tuple[str, str]]:
    """(image png, ground-truth file) pairs, cities and images in sorted order.

    needed: "json" or "instance", the ground-truth file each image must have.
    """
    if not _path_manager.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder {image_dir!r} not found (expected "
                                "{root}/leftImg8bit/{split}/{city}/*_leftImg8bit.png)")
    if not _path_manager.isdir(gt_dir):
        raise FileNotFoundError(f"Cityscapes ground-truth folder {gt_dir!r} not found (expected "
                                "{root}/gtFine/{split}/{city}/*_gtFine_*)")
    pairs = []
    missing = []
    for city in sorted(_path_manager.ls(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not _path_manager.isdir(city_dir):
            continue
        for name in sorted(_path_manager.ls(city_dir)):
            if not name.endswith(_IMAGE_SUFFIX):
                continue
            gt_file = os.path.join(gt_dir, city, name[: -len(_IMAGE_SUFFIX)] + _GT_SUFFIXES[needed])
            if not _path_manager.isfile(gt_file):
                missing.append(gt_file)
            pairs.append((os.path.join(city_dir, name), gt_file))
    if not pairs:
        raise FileNotFoundError(f"No *{_IMAGE_SUFFIX} images in the city folders of {image_dir!r}")
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(pairs)} Cityscapes images have no ground-truth "
                                f"file, e.g. {missing[0]!r}")
    return pairs


# ---------------------------------------------------------------- instance id image -> annotations


def _read_instance_ids_png(path: str) -> np.ndarray:
    """The instanceIds png as an int32 [H, W] array."""
    with _path_manager.open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    ids = np.asarray(image)
    if ids.ndim != 2:
        raise ValueError(f"{path!r} is not a single-channel instance id image (shape {ids.shape})")
    return ids.astype(np.int32, copy=False)


def _rasterize_polygons_json(path: str) -> np.ndarray:
    """The polygons json drawn into an instance id image [H, W] by cityscapesscripts itself."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage

    with _path_manager.open(path, "r") as f:
        text = f.read()
    annotation = Annotation()
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            annotation.fromJsonText(text)
            image = createInstanceImage(annotation, "ids")
    except SystemExit:  # cityscapesscripts' printError exits (e.g. on an unknown label)
        message = output.getvalue().strip() or "cityscapesscripts exited"
        raise ValueError(f"Cannot rasterise {path!r}: {message.splitlines()[0]}") from None
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"Malformed Cityscapes polygon file {path!r}: {e!r}") from e
    return np.asarray(image, dtype=np.int32)


def _remove_collinear(points: np.ndarray) -> np.ndarray:
    """Drops the vertices of a closed polygon [N, 2] that lie on a straight run (exact test)."""
    prev_edge = points - np.roll(points, 1, axis=0)
    next_edge = np.roll(points, -1, axis=0) - points
    cross = prev_edge[:, 0] * next_edge[:, 1] - prev_edge[:, 1] * next_edge[:, 0]
    return points[cross != 0]


def _trace(mask: np.ndarray) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(outer boundaries, hole boundaries) of a bool mask, as [N, 2] (x, y) vertex arrays.

    Marching squares at level 0.5 runs along pixel edges (pixel (r, c) spans
    [c, c + 1) x [r, r + 1)) and cuts each convex pixel corner by a diagonal.
    """
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)  # so every contour is closed
    outer, holes = [], []
    for contour in measure.find_contours(padded, 0.5, positive_orientation="high"):
        # (row, col) of the padded array -> (x, y) continuous: -1 for the pad, +0.5 to pixel centres.
        xy = contour[:-1, ::-1] - 0.5  # the last point repeats the first
        x, y = xy[:, 0], xy[:, 1]
        signed_area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        # with "high" orientation, outer boundaries have negative area (x right, y down), holes positive
        (outer if signed_area < 0 else holes).append(xy)
    return outer, holes


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """A bool mask [H, W] as COCO polygons [x0, y0, x1, y1, ...] whose union is the mask.

    One polygon per 4-connected component, along pixel edges, vertices on straight
    runs dropped. COCO polygons cannot have holes, so a component with a hole (an
    object seen around another one) is cut along a pixel column through the hole
    into pieces without holes, whose polygons together rasterise to the same pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    outer, holes = _trace(mask)
    if holes:
        # A cut at a column inside the hole opens it to the outside in both pieces; cutting never
        # creates a hole, so the recursion ends after at most one cut per hole.
        cut = int(np.floor((holes[0][:, 0].min() + holes[0][:, 0].max()) / 2))
        left, right = mask.copy(), mask.copy()
        left[:, cut:] = False
        right[:, :cut] = False
        return mask_to_polygons(left) + mask_to_polygons(right)
    polygons = []
    for xy in outer:
        xy = _remove_collinear(xy)
        if len(xy) >= 3:
            polygons.append(xy.reshape(-1).tolist())
    return polygons


def _annotations_from_ids(ids: np.ndarray, to_polygons: bool) -> List[Dict[str, Any]]:
    """One annotation per evaluated thing id of an instance id image (groups with iscrowd 1)."""
    annotations = []
    lowest = min(CITYSCAPES_THING_LABEL_IDS)
    for instance_id in np.unique(ids[ids >= lowest]).tolist():
        label_id = instance_id // _INSTANCE_ID_BASE if instance_id >= _INSTANCE_ID_BASE else instance_id
        if label_id not in _LABEL_ID_TO_CONTIGUOUS:  # caravan, trailer (ignored in evaluation), ...
            continue
        mask = ids == instance_id
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        anno: Dict[str, Any] = {
            "bbox": [float(x0), float(y0), float(x1), float(y1)],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": _LABEL_ID_TO_CONTIGUOUS[label_id],
            "iscrowd": int(instance_id < _INSTANCE_ID_BASE),
        }
        if to_polygons:
            crop = mask[y0:y1, x0:x1]
            polygons = [(np.asarray(p).reshape(-1, 2) + (x0, y0)).reshape(-1).tolist()
                        for p in mask_to_polygons(crop)]
            if not polygons:
                continue
            anno["segmentation"] = polygons
        else:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")  # str: picklable, JSON-serialisable
            anno["segmentation"] = rle
        annotations.append(anno)
    return annotations


def _load_one(files: Tuple[str, str], from_json: bool, to_polygons: bool) -> Dict[str, Any]:
    """One record from (image png, polygons json or instanceIds png)."""
    image_file, gt_file = files
    ids = _rasterize_polygons_json(gt_file) if from_json else _read_instance_ids_png(gt_file)
    return {
        "file_name": image_file,
        "image_id": os.path.basename(image_file),
        "height": int(ids.shape[0]),
        "width": int(ids.shape[1]),
        "annotations": _annotations_from_ids(ids, to_polygons),
    }


def load_cityscapes_instances(image_dir: str, gt_dir: str, from_json: bool = True,
                              to_polygons: Optional[bool] = None,
                              num_workers: Optional[int] = None) -> List[Dict[str, Any]]:
    """Records of one Cityscapes split (see the module docstring).

    image_dir: e.g. "datasets/cityscapes/leftImg8bit/train"; gt_dir: e.g.
        "datasets/cityscapes/gtFine/train".
    from_json: read the polygons json (True) or the instanceIds png (False).
    to_polygons: segmentation as polygons (True) or RLE (False); default from_json.
    num_workers: processes parsing the files; default serial below 64 images,
        else half the CPUs (at most 8).
    """
    to_polygons = from_json if to_polygons is None else bool(to_polygons)
    pairs = _find_cityscapes_files(image_dir, gt_dir, "json" if from_json else "instance")
    if num_workers is None:
        num_workers = 0 if len(pairs) < _PARALLEL_MIN_IMAGES else min(8, max((os.cpu_count() or 2) // 2, 1))
    load = functools.partial(_load_one, from_json=from_json, to_polygons=to_polygons)
    start = time.perf_counter()
    if num_workers > 1:
        with mp.get_context().Pool(num_workers) as pool:
            records = pool.map(load, pairs, chunksize=8)
    else:
        records = [load(p) for p in pairs]
    num_annos = sum(len(r["annotations"]) for r in records)
    logger.info("Loaded %d images with %d instances from %s (%s) in %.1f s", len(records), num_annos,
                image_dir, "polygons json" if from_json else "instanceIds png", time.perf_counter() - start)
    return records


# ---------------------------------------------------------------- registration


def register_cityscapes_instances(name: str, image_dir: str, gt_dir: str, from_json: bool = True,
                                  to_polygons: Optional[bool] = None) -> None:
    """Registers `name` as a Cityscapes instance split, loaded lazily (the folders need not exist yet).

    Metadata: cityscapes_instances_metadata() plus image_dir and gt_dir.
    """
    DatasetCatalog.register(name, functools.partial(load_cityscapes_instances, image_dir, gt_dir,
                                                    from_json, to_polygons))
    MetadataCatalog.get(name).set(image_dir=image_dir, gt_dir=gt_dir, **cityscapes_instances_metadata())


def register_all_cityscapes(root: str) -> None:
    """Registers cityscapes_fine_instance_seg_{train,val,test} under `root` (names already
    registered are left alone). Nothing is read from disk."""
    for name, (image_rel, gt_rel) in _CITYSCAPES_SPLITS.items():
        if name in DatasetCatalog:
            continue
        register_cityscapes_instances(name, os.path.join(root, image_rel), os.path.join(root, gt_rel))
