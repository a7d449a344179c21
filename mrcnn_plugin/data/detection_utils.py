"""Per-image helpers of the data pipeline: read an image, transform its annotations,
turn them into `Instances`, and build the config's augmentations.

Conventions: images are numpy HxWxC uint8 in the requested colour order
("BGR", "RGB") or HxWx1 for "L"; sizes are (height, width); annotation boxes
follow their "bbox_mode" (see `BoxMode`).
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from fvcore.transforms.transform import HFlipTransform, Transform, TransformList
from iopath.common.file_io import g_pathmgr
from PIL import Image, ImageOps, UnidentifiedImageError

from ..structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, polygons_to_bitmask
from .box_mode import BoxMode
from .catalog import MetadataCatalog, check_metadata_consistency
from .transforms import Augmentation, RandomCrop, RandomFlip, ResizeShortestEdge

__all__ = ["ImageReadError", "SizeMismatchError", "read_image", "read_image_tensor", "check_image_size",
           "transform_instance_annotations", "transform_keypoint_annotations", "annotations_to_instances",
           "filter_empty_instances", "create_keypoint_hflip_indices", "build_augmentation"]

logger = logging.getLogger(__name__)
# iopath's shared manager: handlers registered elsewhere (e.g. for URLs) apply here too.
_path_manager = g_pathmgr

_FORMATS = ("BGR", "RGB", "L")


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (empty, truncated, not an image)."""


class SizeMismatchError(ValueError):
    """The decoded image's size differs from the size its record (annotation file) states."""


# ----------------------------------------------------------------------------- reading


def _to_8bit_rgb_or_l(image: Image.Image, format: str) -> Image.Image:
    """Any PIL mode -> "RGB" (or "L" when format is "L").

    16/32-bit integer images are scaled to 8 bits first: PIL's own conversion
    clips them at 255, which turns most of a 16-bit photo white.
    """
    target = "L" if format == "L" else "RGB"
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F" and values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return image if image.mode == target else image.convert(target)


def _apply_exif_orientation(image: Image.Image, file_name: str) -> Image.Image:
    """The image as displayed: rotated / mirrored per its EXIF orientation tag, if any.

    A corrupt EXIF block is not worth losing the photo over: it is read
    unrotated, with a warning.
    """
    try:
        return ImageOps.exif_transpose(image)
    except Exception as e:  # PIL raises assorted types for malformed EXIF
        logger.warning("Ignoring unreadable EXIF orientation of %s: %s", file_name, e)
        return image


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Decodes an image file -> np.ndarray HxWx3 uint8 in `format` order ("BGR"/"RGB"), or HxWx1 ("L").

    The EXIF orientation tag is applied (phone photos are stored sideways),
    and grayscale, RGBA (alpha dropped), palette, CMYK and 16-bit images are
    converted. Raises FileNotFoundError for a missing file and ImageReadError
    (an OSError) naming the file when it is empty, truncated or not an image.
    """
    if format not in _FORMATS:
        raise ValueError(f"Image format must be one of {_FORMATS}, got {format!r}")
    if not _path_manager.exists(file_name):
        raise FileNotFoundError(f"Image file {file_name!r} does not exist")
    try:
        with _path_manager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now, inside the try: truncation shows up only here
            image = _apply_exif_orientation(image, file_name)
            image = _to_8bit_rgb_or_l(image, format)
    except UnidentifiedImageError as e:
        raise ImageReadError(f"Cannot read image {file_name!r}: empty or not an image file ({e})") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"Cannot read image {file_name!r}: {e}") from e
    array = np.asarray(image)
    if format == "L":
        return array[:, :, None]
    if format == "BGR":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def read_image_tensor(file_name: str, format: str = "BGR") -> torch.Tensor:
    """read_image as the exported model takes it: uint8 Tensor[3, H, W] in `format` order."""
    return torch.from_numpy(np.ascontiguousarray(read_image(file_name, format).transpose(2, 0, 1)))


def check_image_size(record: Dict[str, Any], image: np.ndarray) -> None:
    """Raises SizeMismatchError when record's height/width differ from image's (HxW...).

    Fills in "height"/"width" when the record has none.
    """
    h, w = image.shape[:2]
    if "height" in record or "width" in record:
        expected = (record.get("height", h), record.get("width", w))
        if expected != (h, w):
            raise SizeMismatchError(
                f"Image {record.get('file_name')!r} is {h}x{w} (height x width) but its record says "
                f"{expected[0]}x{expected[1]}")
    record.setdefault("height", h)
    record.setdefault("width", w)


# ----------------------------------------------------------------------------- annotations


def transform_keypoint_annotations(keypoints: Sequence[float], transforms: TransformList,
                                   image_size: Sequence[int],
                                   keypoint_hflip_indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Flat [x, y, v] * K keypoints -> transformed float64 array [K, 3].

    Points that leave the image become unlabelled; an odd number of horizontal
    flips swaps left/right keypoints with `keypoint_hflip_indices`; unlabelled
    points are (0, 0, 0), COCO's convention.
    """
    kp = np.array(keypoints, dtype=np.float64).reshape(-1, 3)
    kp[:, :2] = transforms.apply_coords(kp[:, :2].copy())
    h, w = image_size
    inside = (kp[:, 0] >= 0) & (kp[:, 1] >= 0) & (kp[:, 0] <= w) & (kp[:, 1] <= h)
    kp[~inside, 2] = 0
    n_hflips = sum(isinstance(t, HFlipTransform) for t in transforms.transforms)
    if n_hflips % 2 == 1:
        if keypoint_hflip_indices is None:
            raise ValueError("Keypoints were flipped horizontally but no keypoint_hflip_indices were "
                             "given (metadata keypoint_flip_map of the training datasets)")
        if len(keypoint_hflip_indices) != len(kp):
            raise ValueError(f"{len(kp)} keypoints per instance, but the flip map covers "
                             f"{len(keypoint_hflip_indices)}")
        kp = kp[np.asarray(keypoint_hflip_indices, dtype=np.int64)]
    kp[kp[:, 2] == 0] = 0
    return kp


def transform_instance_annotations(anno: Dict[str, Any], transforms: Union[Transform, List[Transform]],
                                   image_size: Sequence[int],
                                   keypoint_hflip_indices: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Applies `transforms` to one annotation (in place; returned too) for an image now of image_size (h, w).

    bbox -> XYXY_ABS clipped to the image; polygons -> list of flat float64
    arrays; an RLE -> a HxW uint8 mask; keypoints -> [K, 3] float64.
    """
    if isinstance(transforms, (list, tuple)):
        transforms = TransformList(list(transforms))
    elif not isinstance(transforms, TransformList):
        transforms = TransformList([transforms])
    h, w = image_size
    box = np.asarray(BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS), dtype=np.float64)
    box = transforms.apply_box(box[None])[0].clip(min=0)
    anno["bbox"] = np.minimum(box, [w, h, w, h])
    anno["bbox_mode"] = BoxMode.XYXY_ABS

    if "segmentation" in anno:
        segm = anno["segmentation"]
        if isinstance(segm, list):
            polygons = [np.array(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            anno["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        elif isinstance(segm, dict):
            anno["segmentation"] = transforms.apply_segmentation(mask_util.decode(segm))
        elif isinstance(segm, np.ndarray):
            anno["segmentation"] = transforms.apply_segmentation(segm)
        else:
            raise ValueError(f"Cannot transform segmentation of type {type(segm)}: expected polygons "
                             "(list of lists), an RLE dict or a HxW mask")
    if "keypoints" in anno:
        anno["keypoints"] = transform_keypoint_annotations(anno["keypoints"], transforms, image_size,
                                                           keypoint_hflip_indices)
    return anno


def _segmentation_to_bitmask(segm: Any, image_size: Sequence[int]) -> np.ndarray:
    """Polygons / RLE / HxW mask -> HxW bool mask of image_size."""
    h, w = image_size
    if isinstance(segm, list):
        return polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], h, w)
    if isinstance(segm, dict):
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray):
        mask = segm
    else:
        raise ValueError(f"Unknown segmentation of type {type(segm)}")
    if mask.shape[:2] != (h, w):
        raise ValueError(f"Mask of shape {mask.shape} does not match the image size {(h, w)}")
    return mask.astype(bool)


def annotations_to_instances(annos: List[Dict[str, Any]], image_size: Sequence[int],
                             mask_format: str = "polygon") -> Instances:
    """Transformed annotations of one image -> Instances(image_size=(h, w)).

    Fields: gt_boxes (Boxes XYXY), gt_classes (int64), gt_masks when the
    annotations have "segmentation" (PolygonMasks for mask_format "polygon",
    BitMasks [N, H, W] for "bitmask"), gt_keypoints (Keypoints [N, K, 3]) when
    they have "keypoints".
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    boxes = [BoxMode.convert(np.asarray(a["bbox"], dtype=np.float64), a["bbox_mode"], BoxMode.XYXY_ABS)
             for a in annos]
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    target.gt_classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)

    with_segm = [("segmentation" in a) for a in annos]
    if any(with_segm):
        if not all(with_segm):
            raise ValueError(f"{with_segm.count(False)} of {len(annos)} annotations of one image have no "
                             "segmentation while the others do")
        segms = [a["segmentation"] for a in annos]
        if mask_format == "polygon":
            if not all(isinstance(s, list) for s in segms):
                raise ValueError("INPUT.MASK_FORMAT 'polygon' needs polygon segmentations, but an "
                                 "annotation has an RLE / bitmap mask: use INPUT.MASK_FORMAT 'bitmask'")
            target.gt_masks = PolygonMasks(segms)
        elif mask_format == "bitmask":
            masks = [torch.from_numpy(np.ascontiguousarray(_segmentation_to_bitmask(s, image_size)))
                     for s in segms]
            target.gt_masks = BitMasks(torch.stack(masks) if masks
                                       else torch.zeros((0,) + image_size, dtype=torch.bool))
        else:
            raise ValueError(f"mask_format must be 'polygon' or 'bitmask', got {mask_format!r}")

    with_kp = [("keypoints" in a) for a in annos]
    if any(with_kp):
        if not all(with_kp):
            raise ValueError(f"{with_kp.count(False)} of {len(annos)} annotations of one image have no "
                             "keypoints while the others do")
        target.gt_keypoints = Keypoints(np.stack([np.asarray(a["keypoints"], dtype=np.float32).reshape(-1, 3)
                                                  for a in annos]))
    return target


def filter_empty_instances(instances: Instances, by_box: bool = True, by_mask: bool = True,
                           box_threshold: float = 1e-5) -> Instances:
    """Keeps instances whose box has width and height > box_threshold and whose mask is non-empty."""
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box and instances.has("gt_boxes"):
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty()
    return instances[keep]


def create_keypoint_hflip_indices(dataset_names: Union[str, Sequence[str]]) -> np.ndarray:
    """Index array [K]: keypoint i becomes keypoint indices[i] after a horizontal flip.

    From the datasets' metadata keypoint_names and keypoint_flip_map, which
    must agree across all the datasets named.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    dataset_names = list(dataset_names)
    if not dataset_names:
        raise ValueError("create_keypoint_hflip_indices needs at least one dataset name (DATASETS.TRAIN)")
    names = check_metadata_consistency("keypoint_names", dataset_names)
    flip_map = check_metadata_consistency("keypoint_flip_map", dataset_names)
    if names is None or flip_map is None:
        # Metadata.__getattr__ gives the error naming the dataset and the missing field.
        meta = MetadataCatalog.get(dataset_names[0])
        _ = meta.keypoint_names, meta.keypoint_flip_map
    pairs = dict(flip_map)
    pairs.update({b: a for a, b in pairs.items()})
    names = list(names)
    return np.asarray([names.index(pairs.get(n, n)) for n in names], dtype=np.int64)


# ----------------------------------------------------------------------------- config


def build_augmentation(cfg, is_train: bool) -> List[Augmentation]:
    """The config's augmentations, in the order they are applied.

    Training: [RandomCrop (INPUT.CROP.ENABLED)], ResizeShortestEdge(MIN_SIZE_TRAIN,
    MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING), [RandomFlip (INPUT.RANDOM_FLIP)].
    Inference: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST, "choice").
    """
    if is_train:
        min_size, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size, max_size, sample_style = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice"
    augs: List[Augmentation] = []
    if is_train and cfg.INPUT.CROP.ENABLED:
        # Before the resize, as in detectron2's DatasetMapper: the crop is a
        # fraction of the original image and the result is resized as usual.
        augs.append(RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    augs.append(ResizeShortestEdge(min_size, max_size, sample_style))
    if is_train and cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                               vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))
    return augs
