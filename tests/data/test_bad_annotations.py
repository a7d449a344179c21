"""Bad or unusual annotations on their way to training: what the COCO loader and the
DatasetMapper do with each (kept, clipped, dropped with a counted warning, or filtered),
and that what is kept lands on the right pixels.

Each test builds a tiny COCO json / record and images in tmp_path (a few dozen pixels).
"""
import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data import (BoxMode, DatasetMapper, MetadataCatalog, get_detection_dataset_dicts,
                               load_coco_json, register_coco_instances)
from mrcnn_plugin.modeling.roi_heads.keypoint_head import keypoint_rcnn_loss
from mrcnn_plugin.structures import Boxes, Instances, polygons_to_bitmask, rasterize_polygons_within_box

LOGGER = "mrcnn_plugin.data"


def _cfg(**overrides):
    """Training config: masks on, no flip, and a short side that keeps these tiny images at their size."""
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MIN_SIZE_TRAIN = (40,)
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def _image(root: Path, name: str, h: int, w: int, value: int = 60) -> str:
    path = root / name
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return str(path)


def _write_json(root: Path, images, annotations, categories=({"id": 1, "name": "thing"},)) -> Path:
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations),
                                "categories": list(categories)}))
    return path


def _rle(mask: np.ndarray) -> dict:
    """A compressed COCO RLE of an HxW 0/1 mask, as the json stores it (counts a str)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# ----------------------------------------------------------------------------- only-crowd images


def test_only_crowd_images_filtered_from_training_and_counted(tmp_path, fresh_name, caplog):
    """As in detectron2: an image whose only annotations are crowd regions (and one with none)
    is removed from the training set, counted in the log line "Removed 2 images with no usable
    annotations. 1 images left."; with DATALOADER.FILTER_EMPTY_ANNOTATIONS off it reaches the
    mapper, which drops the crowd region and gives an image with 0 instances (pure background)."""
    h, w = 40, 50
    crowd = np.zeros((h, w), np.uint8)
    crowd[5:15, 5:25] = 1
    images = [{"id": i, "file_name": _image(tmp_path, f"{i}.png", h, w), "height": h, "width": w} for i in (1, 2, 3)]
    annotations = [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 20], "area": 400,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
        {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [5, 5, 20, 10], "area": 200,
         "segmentation": _rle(crowd)},
    ]   # image 3: no annotation at all
    register_coco_instances(fresh_name, {}, str(_write_json(tmp_path, images, annotations)), "")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        records = get_detection_dataset_dicts([fresh_name], filter_empty=_cfg().DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    assert [r["image_id"] for r in records] == [1]
    assert "Removed 2 images with no usable annotations. 1 images left." in caplog.text

    everything = get_detection_dataset_dicts([fresh_name], filter_empty=False)
    only_crowd = next(r for r in everything if r["image_id"] == 2)
    assert [a["iscrowd"] for a in only_crowd["annotations"]] == [1]   # the loader keeps it (for evaluation)
    out = DatasetMapper(_cfg(**{"DATALOADER.FILTER_EMPTY_ANNOTATIONS": False}), is_train=True)(only_crowd)
    assert len(out["instances"]) == 0 and out["instances"].image_size == (h, w)


# ----------------------------------------------------------------------------- boxes outside the image


def test_boxes_partly_outside_clipped_wholly_outside_dropped(tmp_path):
    """A box partly outside the 40x50 (h x w) image is clipped to it (and its mask keeps only the
    pixels inside); boxes wholly outside (right of it, or above-left at negative coordinates) are
    dropped by the mapper: 2 of 4 instances are left. The loader itself keeps all four without a
    warning: like detectron2, nothing is counted or logged for them."""
    h, w = 40, 50
    partly = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [40, 30, 20, 20], "area": 400,
              "segmentation": [[40, 30, 60, 30, 60, 50, 40, 50]]}
    right = {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [60, 5, 10, 10], "area": 100,
             "segmentation": [[60, 5, 70, 5, 70, 15, 60, 15]]}
    above_left = {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [-20, -20, 10, 10], "area": 100,
                  "segmentation": [[-20, -20, -10, -20, -10, -10, -20, -10]]}
    inside = {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 10], "area": 100,
              "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]}
    images = [{"id": 1, "file_name": "1.png", "height": h, "width": w}]
    _image(tmp_path, "1.png", h, w)
    path = _write_json(tmp_path, images, [partly, right, above_left, inside])
    records = load_coco_json(str(path), str(tmp_path))
    assert len(records[0]["annotations"]) == 4

    for mask_format in ("polygon", "bitmask"):
        out = DatasetMapper(_cfg(**{"INPUT.MASK_FORMAT": mask_format}), is_train=True)(records[0])
        inst = out["instances"]
        assert len(inst) == 2, mask_format
        assert inst.gt_boxes.tensor.tolist() == [[40.0, 30.0, 50.0, 40.0], [5.0, 5.0, 15.0, 15.0]]
        masks = (inst.gt_masks.tensor.numpy() if mask_format == "bitmask"
                 else np.stack([polygons_to_bitmask(p, h, w) for p in inst.gt_masks.polygons]))
        assert masks.shape == (2, h, w)
        assert masks[0].sum() == 10 * 10 and masks[0][30:40, 40:50].all()   # the 10 x 10 px inside
        assert masks[1].sum() == 100


# ----------------------------------------------------------------------------- self-intersecting polygon


def test_bow_tie_polygon_rasterises_like_pycocotools(tmp_path):
    """A self-intersecting 'bow-tie' polygon (4,4)-(24,24)-(24,4)-(4,24) is kept by the loader and
    rasterises without error to pycocotools' mask: 200 pixels, the two 100-pixel triangles (the
    geometric area), both for INPUT.MASK_FORMAT bitmask and for polygon masks, in the image and in
    the mask head's 20x20 target of its box."""
    h, w = 30, 30
    bow_tie = [4.0, 4.0, 24.0, 24.0, 24.0, 4.0, 4.0, 24.0]
    expected = mask_util.decode(mask_util.frPyObjects([bow_tie], h, w))[:, :, 0].astype(bool)
    assert expected.sum() == 200
    assert expected[:, :14].sum() == 100 and expected[:, 14:].sum() == 100   # left and right triangles
    _image(tmp_path, "bt.png", h, w)
    path = _write_json(tmp_path, [{"id": 1, "file_name": "bt.png", "height": h, "width": w}],
                       [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [4, 4, 20, 20],
                         "area": 200, "segmentation": [bow_tie]}])
    record = load_coco_json(str(path), str(tmp_path))[0]
    assert record["annotations"][0]["segmentation"] == [bow_tie]

    bitmask = DatasetMapper(_cfg(**{"INPUT.MASK_FORMAT": "bitmask", "INPUT.MIN_SIZE_TRAIN": (30,)}), True)(record)
    np.testing.assert_array_equal(bitmask["instances"].gt_masks.tensor[0].numpy(), expected)
    polygon = DatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TRAIN": (30,)}), True)(record)
    polygons = polygon["instances"].gt_masks.polygons[0]
    np.testing.assert_array_equal(polygons_to_bitmask(polygons, h, w), expected)
    target = rasterize_polygons_within_box(polygons, np.array([4.0, 4.0, 24.0, 24.0]), 20)
    np.testing.assert_array_equal(target.numpy(), expected[4:24, 4:24])


# ----------------------------------------------------------------------------- RLE of the wrong size


def test_rle_of_wrong_size_dropped_with_counted_warning(tmp_path, caplog):
    """An RLE whose "size" is not its image's height x width (here 20x30 for a 40x50 image; crowd or
    not) cannot be placed on the image: the loader drops it with one warning naming the json file,
    the count ("dropped 2 of 3") and the annotation ids, so training goes on; the image's correct
    RLE is kept and maps to a 40x50 bitmask."""
    h, w = 40, 50
    good = np.zeros((h, w), np.uint8)
    good[10:20, 10:30] = 1
    small = np.zeros((20, 30), np.uint8)
    small[2:8, 2:8] = 1
    _image(tmp_path, "r.png", h, w)
    path = _write_json(tmp_path, [{"id": 1, "file_name": "r.png", "height": h, "width": w}], [
        {"id": 31, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 10], "area": 200,
         "segmentation": _rle(good)},
        {"id": 32, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 2, 6, 6], "area": 36,
         "segmentation": _rle(small)},
        {"id": 33, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [2, 2, 6, 6], "area": 36,
         "segmentation": _rle(small)},
    ])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = load_coco_json(str(path), str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "dropped 2 of 3 annotations" in warnings[0]
    assert "2 with an RLE mask whose size is not its image's height x width (ids 32, 33)" in warnings[0]
    assert [a["bbox"] for a in records[0]["annotations"]] == [[10, 10, 20, 10]]

    out = DatasetMapper(_cfg(**{"INPUT.MASK_FORMAT": "bitmask"}), True)(records[0])
    masks = out["instances"].gt_masks.tensor
    assert tuple(masks.shape) == (1, h, w)
    np.testing.assert_array_equal(masks[0].numpy(), good.astype(bool))


# ----------------------------------------------------------------------------- keypoints outside their box


def test_keypoints_outside_box_kept_but_ignored_by_keypoint_target(tmp_path, fresh_name):
    """Keypoints inside the image but outside their instance's box are kept as given (labelled, same
    coordinates) by the mapper; the keypoint head's target (Keypoints.to_heatmap, detectron2's
    keypoints_to_heatmap) marks them invalid for an ROI that does not contain them, so they add
    nothing to the loss: the loss equals the cross-entropy of the two keypoints inside (one of them
    exactly on the box's right edge, which goes to the last heatmap column)."""
    MetadataCatalog.get(fresh_name).set(keypoint_names=("a", "b", "c"), keypoint_flip_map=())
    box = [10.0, 10.0, 30.0, 20.0]   # XYXY, 20 x 10 px
    keypoints = [15.0, 12.0, 2,    # inside
                 40.0, 30.0, 2,    # inside the image, outside the box
                 30.0, 15.0, 1]    # on the box's right edge
    record = {"file_name": _image(tmp_path, "kp.png", 40, 50), "height": 40, "width": 50, "image_id": 1,
              "annotations": [{"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0,
                               "keypoints": keypoints}]}
    cfg = _cfg(**{"MODEL.MASK_ON": False, "MODEL.KEYPOINT_ON": True, "DATASETS.TRAIN": (fresh_name,)})
    inst = DatasetMapper(cfg, True)(record)["instances"]
    assert inst.gt_keypoints.tensor[0].tolist() == [[15.0, 12.0, 2.0], [40.0, 30.0, 2.0], [30.0, 15.0, 1.0]]

    side = 56
    heatmaps, valid = inst.gt_keypoints.to_heatmap(inst.gt_boxes.tensor, side)
    assert valid.tolist() == [[1, 0, 1]]
    # x: (15 - 10) * 56 / 20 = 14, y: (12 - 10) * 56 / 10 = 11.2 -> 11; the edge point: x = 55, y = 28.
    assert heatmaps.tolist() == [[11 * side + 14, 0, 28 * side + 55]]

    proposals = Instances((40, 50), proposal_boxes=Boxes(torch.tensor([box])), gt_keypoints=inst.gt_keypoints)
    logits = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    loss = keypoint_rcnn_loss(logits, [proposals], normalizer=None)
    flat = logits.view(3, side * side)
    expected = F.cross_entropy(flat[[0, 2]], torch.tensor([11 * side + 14, 28 * side + 55]))
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- EXIF-rotated photo


def test_exif_rotated_photo_mask_lands_on_object(tmp_path):
    """A JPEG stored 48 high x 64 wide with EXIF orientation 6 (displayed rotated 90 degrees
    clockwise: 64 high x 48 wide) and a bright rectangle, annotated in the displayed orientation as
    COCO does: the mapper reads it upright (no size mismatch with the record's 64 x 48), and after
    resizing to short side 96 the instance's mask covers the bright pixels of the mapped image
    (IoU > 0.9); had the photo been turned the other way (orientation 8) they would not overlap."""
    stored = np.full((48, 64, 3), 20, np.uint8)
    stored[6:18, 36:60] = 235   # off-centre so that a missing rotation shows
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)

    displayed = np.rot90(stored[:, :, 0] > 128, k=-1)   # 90 degrees clockwise
    rows, cols = np.nonzero(displayed)
    x0, y0, x1, y1 = float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
    record = {"file_name": str(path), "height": 64, "width": 48, "image_id": 1,
              "annotations": [{"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS,
                               "category_id": 0, "iscrowd": 0,
                               "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}]}
    cfg = _cfg(**{"INPUT.MASK_FORMAT": "bitmask", "INPUT.MIN_SIZE_TRAIN": (96,)})
    out = DatasetMapper(cfg, True)(record)
    assert tuple(out["image"].shape) == (3, 128, 96)
    bright = out["image"].numpy().mean(axis=0) > 128
    mask = out["instances"].gt_masks.tensor[0].numpy()
    assert bright.sum() > 500 and mask.sum() > 500

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(mask, bright) > 0.9
    turned_wrong_way = np.rot90(stored[:, :, 0] > 128, k=1).repeat(2, axis=0).repeat(2, axis=1)
    assert turned_wrong_way.shape == mask.shape and iou(mask, turned_wrong_way) < 0.1
