"""Tests of the augmentations, the transforms they produce and annotation transformation."""
import numpy as np
import pytest
from fvcore.transforms.transform import HFlipTransform, NoOpTransform, TransformList
from PIL import Image

from mrcnn_plugin.data import BoxMode, annotations_to_instances, transform_instance_annotations
from mrcnn_plugin.data.transforms import (CropTransform, RandomCrop, RandomFlip, ResizeShortestEdge,
                                          ResizeTransform, apply_augmentations, resize_shortest_edge_size)

# 17 COCO keypoints: nose, left/right eye, ear, shoulder, elbow, wrist, hip, knee, ankle.
COCO_HFLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


@pytest.mark.parametrize("h,w,short,max_size,expected", [
    (480, 640, 800, 1333, (800, 1067)),    # 640 * 800 / 480 = 1066.67 -> 1067
    (427, 640, 800, 1333, (800, 1199)),    # 640 * 800 / 427 = 1199.06 -> 1199
    (640, 480, 800, 1333, (1067, 800)),    # portrait: the width is the short side
    (500, 500, 320, 1333, (320, 320)),
    (300, 1000, 800, 1333, (400, 1333)),   # 1000 * 800 / 300 = 2666.7 > 1333: scale by 1333 / 2666.7 -> h 399.9
    (1000, 250, 600, 1000, (1000, 250)),   # 1000 * 600 / 250 = 2400 > 1000 -> (1000, 250)
])
def test_resize_shortest_edge_sizes(h, w, short, max_size, expected):
    """New sizes match hand computation: short side = size, long side capped at max_size, int(x + 0.5)."""
    assert resize_shortest_edge_size(h, w, short, max_size) == expected
    t = ResizeShortestEdge((short,), max_size, "choice").get_transform(np.zeros((h, w, 3), np.uint8))
    assert (t.new_h, t.new_w) == expected


def test_resize_shortest_edge_sampling():
    """'choice' picks one of the listed sizes; 'range' any integer in [min, max]; size 0 is a no-op."""
    img = np.zeros((100, 200, 3), np.uint8)
    np.random.seed(0)
    choice = {ResizeShortestEdge((64, 96), 1000, "choice").get_transform(img).new_h for _ in range(50)}
    assert choice == {64, 96}
    ranged = {ResizeShortestEdge((64, 70), 1000, "range").get_transform(img).new_h for _ in range(200)}
    assert ranged <= set(range(64, 71)) and len(ranged) > 3
    assert isinstance(ResizeShortestEdge(0, 1000, "choice").get_transform(img), NoOpTransform)


def test_resize_transform_is_pil_bilinear():
    """ResizeTransform on uint8 equals PIL's bilinear resize (detectron2's), and scales coordinates by new/old."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    t = ResizeTransform(30, 40, 12, 17)
    expected = np.asarray(Image.fromarray(img).resize((17, 12), Image.BILINEAR))
    np.testing.assert_array_equal(t.apply_image(img), expected)
    gray = img[:, :, :1]
    out = t.apply_image(gray)
    assert out.shape == (12, 17, 1)
    expected_gray = np.asarray(Image.fromarray(gray[:, :, 0]).resize((17, 12), Image.BILINEAR))
    np.testing.assert_array_equal(out[:, :, 0], expected_gray)
    np.testing.assert_allclose(t.apply_coords(np.array([[40.0, 30.0], [20.0, 15.0]])), [[17.0, 12.0], [8.5, 6.0]])


def _person_annotation():
    kp = np.zeros((17, 3))
    kp[0] = (50.0, 5.0, 2)     # nose
    kp[1] = (30.5, 10.5, 2)    # left eye
    kp[2] = (70.5, 10.5, 1)    # right eye
    return {"bbox": [10.0, 20.0, 30.0, 40.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
            "segmentation": [[10.0, 20.0, 40.0, 20.0, 40.0, 60.0]], "keypoints": kp.reshape(-1).tolist()}


def test_hflip_boxes_polygons_keypoints():
    """Horizontal flip of a width-100 image: x -> 100 - x for box, polygon and keypoints; left/right keypoints swap."""
    anno = transform_instance_annotations(_person_annotation(), [HFlipTransform(100)], (80, 100),
                                          keypoint_hflip_indices=COCO_HFLIP)
    # XYWH [10, 20, 30, 40] = XYXY [10, 20, 40, 60] -> [100 - 40, 20, 100 - 10, 60]
    np.testing.assert_allclose(anno["bbox"], [60.0, 20.0, 90.0, 60.0])
    assert anno["bbox_mode"] == BoxMode.XYXY_ABS
    np.testing.assert_allclose(anno["segmentation"][0], [90.0, 20.0, 60.0, 20.0, 60.0, 60.0])
    kp = anno["keypoints"]
    np.testing.assert_allclose(kp[0], [50.0, 5.0, 2])        # nose stays the nose
    np.testing.assert_allclose(kp[2], [69.5, 10.5, 2])       # the left eye is now on the right
    np.testing.assert_allclose(kp[1], [29.5, 10.5, 1])       # and the right eye on the left
    np.testing.assert_array_equal(kp[3:], 0)                 # unlabelled stay (0, 0, 0)


def test_hflip_keypoints_need_flip_indices():
    """Flipping keypoints without a flip map is an error rather than silently mislabelled keypoints."""
    with pytest.raises(ValueError, match="keypoint_hflip_indices"):
        transform_instance_annotations(_person_annotation(), [HFlipTransform(100)], (80, 100))


def test_double_flip_and_resize_then_flip():
    """Two flips cancel (keypoints keep their labels); resize x0.5 then flip maps x to 50 - x / 2."""
    anno = transform_instance_annotations(_person_annotation(), [HFlipTransform(100), HFlipTransform(100)],
                                          (80, 100), keypoint_hflip_indices=COCO_HFLIP)
    np.testing.assert_allclose(anno["keypoints"][1], [30.5, 10.5, 2])
    tl = TransformList([ResizeTransform(80, 100, 40, 50), HFlipTransform(50)])
    anno = transform_instance_annotations(_person_annotation(), tl, (40, 50), keypoint_hflip_indices=COCO_HFLIP)
    np.testing.assert_allclose(anno["bbox"], [30.0, 10.0, 45.0, 30.0])
    np.testing.assert_allclose(anno["keypoints"][2], [50 - 30.5 / 2, 10.5 / 2, 2])


def test_keypoints_outside_become_unlabelled_and_box_clipped():
    """A crop that cuts off keypoints makes them (0, 0, 0); the box is clipped to the crop."""
    crop = CropTransform(40, 0, 60, 80)   # keeps x in [40, 100]
    anno = transform_instance_annotations(_person_annotation(), [crop], (80, 60))
    kp = anno["keypoints"]
    np.testing.assert_array_equal(kp[1], 0)                  # left eye at x 30.5 is outside
    np.testing.assert_allclose(kp[0], [10.0, 5.0, 2])
    np.testing.assert_allclose(kp[2], [30.5, 10.5, 1])
    np.testing.assert_allclose(anno["bbox"], [0.0, 20.0, 0.0, 60.0])   # box x [10, 40] -> [-30, 0] -> clipped


def test_crop_clips_polygons():
    """Cropping clips polygons to the window (no shapely needed); polygons fully outside vanish."""
    crop = CropTransform(10, 10, 20, 20)  # window x, y in [10, 30]
    square = np.array([[0, 0], [20, 0], [20, 20], [0, 20]], dtype=np.float64)     # overlaps [10, 20]^2
    outside = np.array([[40, 40], [50, 40], [50, 50]], dtype=np.float64)
    out = crop.apply_polygons([square, outside])
    assert len(out) == 1
    pts = out[0]
    assert pts.min() >= 0 and pts.max() <= 20
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert area == pytest.approx(100.0)   # the 10 x 10 overlap
    # Concave "U" crossing the window's top edge twice: area inside is 2 legs of 5 x 10.
    u_shape = np.array([[10, 0], [15, 0], [15, 15], [25, 15], [25, 0], [30, 0], [30, 20], [10, 20]], np.float64)
    mask = annotations_to_instances(
        [{"bbox": [0, 0, 20, 20], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
          "segmentation": [p.reshape(-1) for p in crop.apply_polygons([u_shape])]}],
        (20, 20), mask_format="bitmask").gt_masks.tensor[0].numpy()
    expected = np.zeros((20, 20), bool)
    expected[0:10, 0:5] = True      # left leg x [10, 15] y [10, 20] in crop coordinates
    expected[0:10, 15:20] = True    # right leg x [25, 30]
    expected[5:10, 0:20] = True     # the bottom bar y [15, 20]
    np.testing.assert_array_equal(mask, expected)


def test_random_flip_and_crop_sizes():
    """RandomFlip(prob=1) always flips, prob=0 never; RandomCrop 'relative' (0.5, 0.25) of 40x80 is 20x20."""
    img = np.zeros((40, 80, 3), np.uint8)
    assert isinstance(RandomFlip(1.0).get_transform(img), HFlipTransform)
    assert isinstance(RandomFlip(0.0).get_transform(img), NoOpTransform)
    np.random.seed(1)
    for _ in range(10):
        t = RandomCrop("relative", (0.5, 0.25)).get_transform(img)
        assert (t.h, t.w) == (20, 20) and 0 <= t.y0 <= 20 and 0 <= t.x0 <= 60
        t = RandomCrop("relative_range", (0.9, 0.9)).get_transform(img)
        assert 36 <= t.h <= 40 and 72 <= t.w <= 80
        t = RandomCrop("absolute", (100, 30)).get_transform(img)
        assert (t.h, t.w) == (40, 30)
    out, tl = apply_augmentations([RandomCrop("relative", (0.5, 0.25)), RandomFlip(1.0)], img)
    assert out.shape == (20, 20, 3) and len(tl.transforms) == 2


def test_box_mode_convert():
    """XYWH [1, 2, 3, 4] is XYXY [1, 2, 4, 6] and back, for lists, arrays and tensors."""
    import torch
    assert BoxMode.convert([1, 2, 3, 4], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [1, 2, 4, 6]
    assert BoxMode.convert((1.0, 2.0, 4.0, 6.0), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) == (1, 2, 3, 4)
    np.testing.assert_allclose(BoxMode.convert(np.array([[1.0, 2, 3, 4]]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS),
                               [[1, 2, 4, 6]])
    t = torch.tensor([[1.0, 2, 3, 4]])
    assert BoxMode.convert(t, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS).tolist() == [[1, 2, 4, 6]]
    assert t.tolist() == [[1, 2, 3, 4]]   # input untouched


def test_annotations_to_instances_rle():
    """An RLE segmentation becomes the decoded BitMasks with mask_format 'bitmask'; 'polygon' refuses it clearly."""
    import pycocotools.mask as mask_util
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:6] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    anno = {"bbox": [2, 1, 4, 2], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2, "segmentation": rle}
    inst = annotations_to_instances([anno], (6, 8), mask_format="bitmask")
    np.testing.assert_array_equal(inst.gt_masks.tensor[0].numpy(), mask.astype(bool))
    assert inst.gt_boxes.tensor.tolist() == [[2, 1, 6, 3]] and inst.gt_classes.tolist() == [2]
    with pytest.raises(ValueError, match="bitmask"):
        annotations_to_instances([anno], (6, 8), mask_format="polygon")
    # Through a flip transform the RLE becomes a flipped HxW mask.
    flipped = transform_instance_annotations(dict(anno), [HFlipTransform(8)], (6, 8))
    np.testing.assert_array_equal(flipped["segmentation"], mask[:, ::-1])
