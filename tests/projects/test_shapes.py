"""The Shapes dataset (projects/Shapes): generator geometry, COCO json, catalog registration, configs.

Everything runs on tiny splits in tmp_path, so the suite needs nothing but the repository.
"""
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

_REPO_ROOT = Path(__file__).resolve().parents[2]
_PROJECT = _REPO_ROOT / "projects" / "Shapes"
sys.path.insert(0, str(_PROJECT))  # the project's package is not installed, as in detectron2's projects/

from shapes.datasets import dataset_dir, register_shapes  # noqa: E402
from shapes.generate import (CLASS_NAMES, KEYPOINT_NAMES, SKELETON, ShapeInstance, ShapeParams,  # noqa: E402
                             generate_split, rasterize_shape, write_coco)

from mrcnn_plugin.config import get_cfg  # noqa: E402
from mrcnn_plugin.data import (DatasetCatalog, DatasetMapper, MetadataCatalog,  # noqa: E402
                               build_detection_test_loader, build_detection_train_loader,
                               create_keypoint_hflip_indices)
from mrcnn_plugin.data.transforms import RandomFlip, ResizeShortestEdge  # noqa: E402
from mrcnn_plugin.evaluation import COCOEvaluator, inference_on_dataset  # noqa: E402
from mrcnn_plugin.modeling import build_model  # noqa: E402

_PARAMS = ShapeParams()
_SEED = 7
_NUM_IMAGES = 12


@pytest.fixture(scope="module")
def split() -> Tuple[List[np.ndarray], List[List[ShapeInstance]]]:
    """A small split shared by the geometry tests (generation is deterministic, so sharing is safe)."""
    return generate_split(_NUM_IMAGES, _SEED)


def _all_instances(split) -> Iterator[Tuple[int, int, ShapeInstance]]:
    for i, shapes in enumerate(split[1]):
        for k, shape in enumerate(shapes):
            yield i, k, shape


def _full_mask(shape: ShapeInstance) -> np.ndarray:
    return rasterize_shape(shape.category, shape.center, shape.radius, shape.angle, _PARAMS.image_size)


# ----------------------------------------------------------------------------- generator


def test_generation_is_deterministic_for_a_seed(split):
    """Same seed -> identical images and annotations; another seed -> other images; image i does not
    depend on the split size (each image has its own seeded generator)."""
    images, instances = generate_split(_NUM_IMAGES, _SEED)
    for a, b in zip(images, split[0]):
        np.testing.assert_array_equal(a, b)
    for shapes_a, shapes_b in zip(instances, split[1]):
        assert [s.category for s in shapes_a] == [s.category for s in shapes_b]
        for a, b in zip(shapes_a, shapes_b):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
            assert a.box == b.box
    fewer, _ = generate_split(3, _SEED)
    np.testing.assert_array_equal(fewer[2], split[0][2])
    other, _ = generate_split(3, _SEED + 1)
    assert not np.array_equal(other[0], split[0][0])


def test_split_has_what_the_dataset_promises(split):
    """uint8 RGB 128x128 images, 1-5 shapes each, every class present, sizes within the radius range."""
    images, instances = split
    assert all(im.shape == (128, 128, 3) and im.dtype == np.uint8 for im in images)
    assert all(1 <= len(s) <= _PARAMS.max_objects for s in instances)
    shapes = [s for _, _, s in _all_instances(split)]
    assert {s.category for s in shapes} == set(CLASS_NAMES)
    assert all(_PARAMS.min_radius <= s.radius <= _PARAMS.max_radius for s in shapes)


def test_masks_are_the_visible_parts(split):
    """A mask is its full shape minus every later shape (later ones are drawn on top), so no pixel
    belongs to two instances, and each keeps the promised share of its area."""
    for shapes in split[1]:
        full = [_full_mask(s) for s in shapes]
        owners = np.stack([s.mask for s in shapes]).sum(axis=0)
        assert owners.max() <= 1
        for k, shape in enumerate(shapes):
            covered = np.zeros_like(shape.mask)
            for later in full[k + 1:]:
                covered |= later
            np.testing.assert_array_equal(shape.mask, full[k] & ~covered)
            visible, area = shape.mask.sum(), full[k].sum()
            assert visible >= _PARAMS.min_visible_pixels
            assert visible >= _PARAMS.min_visible_fraction * area


def test_occlusion_happens(split):
    """Some instances are partly hidden (the dataset has occlusion, not just scattered shapes)."""
    hidden = [_full_mask(s).sum() - s.mask.sum() for _, _, s in _all_instances(split)]
    assert sum(h > 0 for h in hidden) >= 3


def test_boxes_are_tight_around_masks(split):
    """box = [min col, min row, max col + 1, max row + 1] of the visible mask (pixel-edge convention)."""
    for _, _, shape in _all_instances(split):
        x0, y0, x1, y1 = shape.box
        ys, xs = np.nonzero(shape.mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_keypoints_are_extreme_points_of_the_full_shape(split):
    """Keypoints (top, bottom, left, right) lie on the full shape, on its first / last row / column."""
    for _, _, shape in _all_instances(split):
        full = _full_mask(shape)
        ys, xs = np.nonzero(full)
        (tx, ty), (bx, by), (lx, ly), (rx, ry) = shape.keypoints[:, :2]
        assert (ty, by, lx, rx) == (ys.min(), ys.max(), xs.min(), xs.max())
        assert all(full[y, x] for x, y in shape.keypoints[:, :2])


def test_circle_keypoints_match_geometry(split):
    """For a circle, the keypoint pixel centres (index + 0.5) are within a pixel of centre -/+ radius.

    The top pixel centre is at or below cy - r, and the row above has no centre inside the circle
    even at the column nearest cx (0.5 away), which bounds the gap by 1 + 0.25 / (2r) < 1.05.
    """
    circles = [s for _, _, s in _all_instances(split) if s.category == "circle"]
    assert circles
    for c in circles:
        cx, cy, r = c.center[0], c.center[1], c.radius
        expected = np.array([[cx, cy - r], [cx, cy + r], [cx - r, cy], [cx + r, cy]])
        np.testing.assert_allclose(c.keypoints[:, :2] + 0.5, expected, rtol=0, atol=1.05)


def test_keypoint_visibility_follows_the_masks(split):
    """v = 2 where the keypoint's pixel is on the visible mask, 1 where a later shape hides it."""
    flags = []
    for _, _, shape in _all_instances(split):
        for x, y, v in shape.keypoints:
            assert v == (2 if shape.mask[y, x] else 1)
            flags.append(v)
    assert 2 in flags


# ----------------------------------------------------------------------------- COCO json


def test_coco_json_round_trips_through_pycocotools(split, tmp_path):
    """write_coco's json loads with pycocotools; each decoded RLE equals its mask, and bbox, area,
    keypoints, categories (ids 1..4, keypoint names, skeleton) and the PNG pixels are as generated."""
    images, instances = split
    json_file = write_coco(tmp_path / "split", images, instances)
    coco = COCO(str(json_file))
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
    for cat in coco.loadCats(coco.getCatIds()):
        assert cat["name"] == CLASS_NAMES[cat["id"] - 1]
        assert cat["keypoints"] == list(KEYPOINT_NAMES)
        assert cat["skeleton"] == [list(p) for p in SKELETON]
    assert len(coco.getImgIds()) == len(images)
    for index, (image, shapes) in enumerate(zip(images, instances)):
        info = coco.loadImgs(index + 1)[0]
        png = np.asarray(Image.open(tmp_path / "split" / "images" / info["file_name"]))
        np.testing.assert_array_equal(png, image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=index + 1))
        assert len(anns) == len(shapes)
        for ann, shape in zip(anns, shapes):
            assert isinstance(ann["segmentation"]["counts"], str)
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), shape.mask)
            np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]).astype(bool), shape.mask)
            x0, y0, x1, y1 = shape.box
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["area"] == shape.mask.sum()
            assert ann["category_id"] == shape.category_id and ann["iscrowd"] == 0
            assert ann["keypoints"] == shape.keypoints.reshape(-1).tolist()
            assert ann["num_keypoints"] == 4
    assert min(a["id"] for a in coco.dataset["annotations"]) == 1  # COCOeval reads id 0 as "no match"


# ----------------------------------------------------------------------------- registration


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Iterator[dict]:
    """8 train + 4 val images registered as test_shapes_train / test_shapes_val."""
    root = tmp_path_factory.mktemp("shapes_data")
    names = register_shapes(root=root, num_train=8, num_val=4, seed=0, prefix="test_shapes")
    yield {"root": root, "names": names}
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_registration_loads_through_the_catalog(registered):
    """Both splits load through the project's COCO loader with every image and annotation, 4 classes,
    bitmask-ready RLE segmentations and keypoints shifted to pixel centres (+0.5)."""
    assert set(registered["names"]) == {"test_shapes_train", "test_shapes_val"}
    for name, count in (("test_shapes_train", 8), ("test_shapes_val", 4)):
        records = DatasetCatalog.get(name)
        assert len(records) == count
        with open(registered["names"][name]) as f:
            coco = json.load(f)
        assert sum(len(r["annotations"]) for r in records) == len(coco["annotations"])
        first = coco["annotations"][0]
        loaded = records[0]["annotations"][0]
        assert loaded["category_id"] == first["category_id"] - 1
        assert isinstance(loaded["segmentation"], dict)
        expected_kp = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(first["keypoints"])]
        assert loaded["keypoints"] == expected_kp
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(CLASS_NAMES)
        assert tuple(meta.keypoint_names) == KEYPOINT_NAMES


def test_registration_reuses_the_cache_and_keys_it_by_parameters(registered):
    """A second registration with the same arguments reuses the folder (no regeneration); other
    generator parameters name another folder, so stale data is never reused."""
    json_file = Path(registered["names"]["test_shapes_train"])
    mtime = json_file.stat().st_mtime_ns
    again = register_shapes(root=registered["root"], num_train=8, num_val=4, seed=0, prefix="test_shapes")
    assert again == registered["names"] and json_file.stat().st_mtime_ns == mtime
    other = dataset_dir(registered["root"], 8, 4, 0, ShapeParams(max_objects=3))
    assert other != json_file.parents[1]


def test_horizontal_flip_swaps_left_and_right_keypoints(registered):
    """After a horizontal flip in the train mapper, the "left" keypoint is still the leftmost point
    of the (flipped) shape: the flip map derived from the keypoint names swaps left and right."""
    np.testing.assert_array_equal(create_keypoint_hflip_indices(["test_shapes_train"]), [0, 1, 3, 2])
    cfg = _shapes_cfg("keypoint_rcnn_R18_FPN_shapes.yaml")
    cfg.MODEL.MASK_ON = True  # to compare the keypoints with the flipped masks
    mapper = DatasetMapper(cfg, True, augmentations=[ResizeShortestEdge(128, 128), RandomFlip(prob=1.0)])
    record = DatasetCatalog.get("test_shapes_train")[0]
    instances = mapper(record)["instances"]
    checked = 0
    for mask, kps in zip(instances.gt_masks.tensor, instances.gt_keypoints.tensor):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        left, right = kps[2], kps[3]
        # Visible points only: an occluded extreme point may lie outside the visible mask's range.
        if left[2] == 2:
            assert left[0] - 0.5 == xs.min()
            checked += 1
        if right[2] == 2:
            assert right[0] - 0.5 == xs.max()
            checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------- configs


def _shapes_cfg(config_name: str):
    """The project config on the tiny registered splits, 2 images per batch, no worker processes."""
    cfg = get_cfg()
    cfg.merge_from_file(str(_PROJECT / "configs" / config_name))
    # The configs' plugin registers the full default splits (2200 images); the tests use tiny ones.
    assert list(cfg.PLUGINS) == ["shapes.builtin"] and importlib.util.find_spec("shapes.builtin") is not None
    cfg.PLUGINS = []
    cfg.DATASETS.TRAIN = ("test_shapes_train",)
    cfg.DATASETS.TEST = ("test_shapes_val",)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("config_name, head_loss", [("mask_rcnn_R18_FPN_shapes.yaml", "loss_mask"),
                                                    ("keypoint_rcnn_R18_FPN_shapes.yaml", "loss_keypoint")])
def test_config_builds_and_trains_one_step(registered, config_name, head_loss):
    """The config merges (detectron2 keys only), builds an R18-FPN model for 4 classes, and one
    training step on a batch from the train loader gives finite losses, including its head's."""
    cfg = _shapes_cfg(config_name)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (18, 64, 4)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    assert all(item["image"].shape[-2:] == (128, 128) for item in batch)
    losses = model(batch)
    assert head_loss in losses
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    sum(losses.values()).backward()


@pytest.mark.parametrize("config_name, task", [("mask_rcnn_R18_FPN_shapes.yaml", "segm"),
                                               ("keypoint_rcnn_R18_FPN_shapes.yaml", "keypoints")])
def test_val_split_evaluates_with_the_coco_evaluator(registered, config_name, task):
    """The val json works with the project's COCOEvaluator for the config's tasks: an (untrained)
    model's predictions score without error, keypoints with the config's 4 OKS sigmas."""
    cfg = _shapes_cfg(config_name)
    cfg.TEST.DETECTIONS_PER_IMAGE = 10  # an untrained model's 100 detections only slow the test down
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    evaluator = COCOEvaluator.from_dataset("test_shapes_val", cfg)
    results = inference_on_dataset(model, build_detection_test_loader(cfg, "test_shapes_val"), evaluator)
    assert set(results) == {"bbox", task}
    assert 0.0 <= results["bbox"]["AP50"] <= 100.0
