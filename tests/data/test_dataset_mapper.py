"""Tests of DatasetMapper: output format, where masks/boxes land after resize + flip, and unreadable images."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data import DatasetCatalog, DatasetMapper
from mrcnn_plugin.data.transforms import RandomFlip, ResizeShortestEdge
from mrcnn_plugin.structures import BitMasks, Boxes, Keypoints, PolygonMasks, polygons_to_bitmask

IMAGE_ID = 54718   # coco-mini train image, 480 x 640 (height x width) in the json


@pytest.fixture(scope="module")
def coco_mini(shared_dir: Path) -> Path:
    return shared_dir / "data" / "coco-mini"


def _record(name: str, image_id: int) -> dict:
    return next(r for r in DatasetCatalog.get(name) if r["image_id"] == image_id)


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN = (320,)
    cfg.INPUT.MIN_SIZE_TEST = 320
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_train_output_format():
    """Training output: uint8 [3, H, W] BGR image resized to 320 short side, original height/width,
    Instances of the resized size."""
    record = _record("coco_mini_train", IMAGE_ID)
    mapper = DatasetMapper(_cfg(), is_train=True)
    out = mapper(record)
    # 480 x 640 with short side 320: 640 * 320 / 480 = 426.67 -> 427
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 320, 427)
    assert out["image"].is_contiguous()
    assert (out["height"], out["width"]) == (480, 640) and out["image_id"] == IMAGE_ID
    assert out["file_name"] == record["file_name"] and "annotations" not in out
    inst = out["instances"]
    assert inst.image_size == (320, 427)
    assert isinstance(inst.gt_boxes, Boxes) and isinstance(inst.gt_masks, PolygonMasks)
    assert inst.gt_classes.dtype == torch.int64
    assert not inst.has("gt_keypoints")
    n_non_crowd = sum(1 for a in record["annotations"] if not a["iscrowd"])
    assert len(inst) == n_non_crowd
    assert "image" not in record and "instances" not in record  # the record itself is not modified


def test_mask_and_box_land_on_flipped_resized_pixels(coco_mini):
    """After resize to 320 and a forced flip, each polygon gt mask matches pycocotools' annToMask
    resized and mirrored, each box the json bbox scaled and mirrored, the image PIL's resize mirrored."""
    api = COCO(str(coco_mini / "annotations" / "instances_train2017.json"))
    anns = [a for a in api.loadAnns(api.getAnnIds(imgIds=[IMAGE_ID])) if not a["iscrowd"]]
    record = _record("coco_mini_train", IMAGE_ID)
    mapper = DatasetMapper(_cfg(), True, augmentations=[ResizeShortestEdge(320, 1333, "choice"), RandomFlip(1.0)])
    out = mapper(record)
    inst = out["instances"]
    new_h, new_w = 320, 427
    sx, sy = new_w / 640, new_h / 480
    assert len(inst) == len(anns)
    checked = 0
    for i, ann in enumerate(anns):
        full = api.annToMask(ann)
        expected = np.asarray(Image.fromarray(full).resize((new_w, new_h), Image.NEAREST))[:, ::-1].astype(bool)
        got = polygons_to_bitmask(inst.gt_masks.polygons[i], new_h, new_w)
        if expected.sum() > 200:   # tiny masks are dominated by rasterisation differences
            assert _iou(got, expected) > 0.85, ann["id"]
            assert _iou(got, expected[:, ::-1]) < _iou(got, expected)   # the flip was applied
            checked += 1
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose(inst.gt_boxes.tensor[i].numpy(),
                                   [new_w - (x + w) * sx, y * sy, new_w - x * sx, (y + h) * sy], rtol=1e-5, atol=1e-3)
    assert checked == 4   # the json areas of all four are > 3000 px, i.e. > 1400 px at this scale
    # The image is PIL's bilinear resize of the file, mirrored, in BGR order.
    rgb = Image.open(record["file_name"]).convert("RGB").resize((new_w, new_h), Image.BILINEAR)
    expected_img = np.asarray(rgb)[:, ::-1, ::-1].transpose(2, 0, 1)
    np.testing.assert_array_equal(out["image"].numpy(), expected_img)


def test_bitmask_format_and_keypoints():
    """INPUT.MASK_FORMAT bitmask gives BitMasks [N, H, W]; KEYPOINT_ON adds Keypoints [N, 17, 3];
    MASK_ON off drops masks; crowd annotations are left out."""
    record = _record("keypoints_coco_mini_train", 535506)  # has one crowd annotation
    cfg = _cfg(**{"INPUT.MASK_FORMAT": "bitmask", "MODEL.KEYPOINT_ON": True,
                  "DATASETS.TRAIN": ("keypoints_coco_mini_train",), "INPUT.RANDOM_FLIP": "none"})
    inst = DatasetMapper(cfg, True)(record)["instances"]
    h, w = inst.image_size
    assert isinstance(inst.gt_masks, BitMasks) and tuple(inst.gt_masks.tensor.shape) == (len(inst), h, w)
    assert isinstance(inst.gt_keypoints, Keypoints) and tuple(inst.gt_keypoints.tensor.shape) == (len(inst), 17, 3)
    assert len(inst) == sum(1 for a in record["annotations"] if not a["iscrowd"])
    cfg = _cfg(**{"MODEL.MASK_ON": False, "INPUT.RANDOM_FLIP": "none"})
    inst = DatasetMapper(cfg, True)(record)["instances"]
    assert not inst.has("gt_masks") and not inst.has("gt_keypoints")


def test_inference_output_has_no_annotations():
    """At inference the output has the resized image and original size, and no annotations or instances."""
    out = DatasetMapper(_cfg(), is_train=False)(_record("coco_mini_val", 397133))  # 427 x 640
    assert tuple(out["image"].shape) == (3, 320, 480)   # 640 * 320 / 427 = 479.6 -> 480
    assert (out["height"], out["width"]) == (427, 640)
    assert "instances" not in out and "annotations" not in out


def test_unreadable_image_train_none_test_raises(tmp_path):
    """A record whose image is missing or corrupt: None (counted) in training, an error naming
    the file at inference."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    record = {"file_name": str(bad), "height": 10, "width": 10, "image_id": 1,
              "annotations": []}
    train = DatasetMapper(_cfg(), True)
    assert train(copy.deepcopy(record)) is None
    assert train(dict(record, file_name=str(tmp_path / "gone.jpg"))) is None
    assert train.num_unreadable == 2 and "gone.jpg" in train.last_error
    with pytest.raises(OSError, match="broken.jpg"):
        DatasetMapper(_cfg(), False)(record)


def test_keypoints_flip_swaps_left_right(coco_mini):
    """Forced flip of image 535506 (640 x 480 -> 427 x 320): annotation 441444's left eye (json 298, 227)
    becomes the right eye at x = 320 - 298.5 * 2/3 = 121, y = 227.5 * 427/640, and the nose stays the nose."""
    api = COCO(str(coco_mini / "annotations" / "person_keypoints_train2017.json"))
    non_crowd = [a["id"] for a in api.loadAnns(api.getAnnIds(imgIds=[535506])) if not a["iscrowd"]]
    cfg = _cfg(**{"MODEL.KEYPOINT_ON": True, "DATASETS.TRAIN": ("keypoints_coco_mini_train",)})
    mapper = DatasetMapper(cfg, True, augmentations=[ResizeShortestEdge(320, 1333, "choice"), RandomFlip(1.0)])
    inst = mapper(_record("keypoints_coco_mini_train", 535506))["instances"]
    assert inst.image_size == (427, 320) and len(inst) == len(non_crowd)
    kp = inst.gt_keypoints.tensor[non_crowd.index(441444)].numpy()
    sx, sy = 320 / 480, 427 / 640
    np.testing.assert_allclose(kp[0], [320 - 281.5 * sx, 240.5 * sy, 2], rtol=1e-5)   # nose
    np.testing.assert_allclose(kp[2], [320 - 298.5 * sx, 227.5 * sy, 2], rtol=1e-5)   # was the left eye
    np.testing.assert_allclose(kp[1], [320 - 272.5 * sx, 222.5 * sy, 2], rtol=1e-5)   # was the right eye
    # json: left ear unlabelled, right ear (233, 208); flipped, the right ear is the left one.
    np.testing.assert_allclose(kp[3], [320 - 233.5 * sx, 208.5 * sy, 2], rtol=1e-5)
    np.testing.assert_array_equal(kp[4], [0, 0, 0])


def test_crop_recomputes_boxes_inside_image():
    """With INPUT.CROP on (relative 0.5) and masks, every kept box is non-empty, inside the image and tight
    around its cropped polygon mask."""
    cfg = _cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "relative", "INPUT.CROP.SIZE": [0.5, 0.5]})
    np.random.seed(0)
    record = _record("coco_mini_train", IMAGE_ID)
    for _ in range(3):
        out = DatasetMapper(cfg, True)(record)
        inst = out["instances"]
        h, w = inst.image_size
        assert (h, w) == tuple(out["image"].shape[1:])
        boxes = inst.gt_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (inst.gt_boxes.area() > 0).all()
        torch.testing.assert_close(boxes, inst.gt_masks.get_bounding_boxes().tensor)
