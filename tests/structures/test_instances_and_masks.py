"""Behavioural tests for mrcnn_plugin.structures: Instances, ImageList, masks, keypoints."""
import numpy as np
import pytest
import torch

from mrcnn_plugin.structures import (BitMasks, Boxes, ImageList, Instances, Keypoints, PolygonMasks,
                                     keypoints_to_heatmap, pad_images, polygons_to_bitmask,
                                     rasterize_polygons_within_box)

# ================================================================ Instances


def _instances(n=3, offset=0.0, with_list=True):
    inst = Instances((20, 30))
    inst.pred_boxes = Boxes(torch.arange(4 * n, dtype=torch.float32).view(n, 4) + offset)
    inst.scores = torch.arange(n, dtype=torch.float32) + offset
    if with_list:  # python lists support int/slice indexing only, not tensor masks
        inst.names = [f"obj{i + offset:.0f}" for i in range(n)]
    return inst


def test_instances_set_get_has_remove():
    """Fields set as attributes or by set() are visible through get/has/get_fields and removable."""
    inst = Instances((20, 30), scores=torch.tensor([0.1, 0.2]))
    assert inst.image_size == (20, 30)
    inst.set("classes", torch.tensor([1, 2]))
    inst.boxes = Boxes(torch.zeros(2, 4))
    assert inst.has("scores") and inst.has("classes") and inst.has("boxes")
    assert not inst.has("masks")
    torch.testing.assert_close(inst.get("classes"), torch.tensor([1, 2]))
    torch.testing.assert_close(inst.scores, torch.tensor([0.1, 0.2]))
    assert set(inst.get_fields()) == {"scores", "classes", "boxes"}
    assert len(inst) == 2
    inst.remove("classes")
    assert not inst.has("classes")
    with pytest.raises(AttributeError):
        _ = inst.classes


def test_instances_empty_len_zero():
    """An Instances with no fields has length 0."""
    assert len(Instances((5, 5))) == 0


def test_instances_length_mismatch_raises():
    """Adding a field of another length raises ValueError."""
    inst = Instances((10, 10), scores=torch.zeros(3))
    with pytest.raises(ValueError):
        inst.classes = torch.zeros(2)
    with pytest.raises(ValueError):
        inst.set("boxes", Boxes(torch.zeros(4, 4)))


def test_instances_indexing():
    """Indexing by int, negative int, slice and bool mask selects the same rows in every field."""
    inst = _instances(4)
    one = inst[1]
    assert len(one) == 1
    torch.testing.assert_close(one.scores, torch.tensor([1.0]))
    torch.testing.assert_close(one.pred_boxes.tensor, torch.tensor([[4.0, 5.0, 6.0, 7.0]]))
    assert one.names == ["obj1"]
    last = inst[-1]
    torch.testing.assert_close(last.scores, torch.tensor([3.0]))
    sl = inst[1:3]
    torch.testing.assert_close(sl.scores, torch.tensor([1.0, 2.0]))
    assert sl.names == ["obj1", "obj2"]
    m = _instances(4, with_list=False)[torch.tensor([True, False, False, True])]
    torch.testing.assert_close(m.scores, torch.tensor([0.0, 3.0]))
    torch.testing.assert_close(m.pred_boxes.tensor, inst.pred_boxes.tensor[[0, 3]])
    assert m.image_size == (20, 30)
    with pytest.raises(IndexError):
        inst[4]
    with pytest.raises(IndexError):
        inst[-5]


def test_instances_cat():
    """Instances.cat concatenates tensors, Boxes and lists field by field, in order."""
    a, b = _instances(2), _instances(3, offset=100.0)
    c = Instances.cat([a, b])
    assert len(c) == 5 and c.image_size == (20, 30)
    torch.testing.assert_close(c.scores, torch.cat([a.scores, b.scores]))
    torch.testing.assert_close(c.pred_boxes.tensor, torch.cat([a.pred_boxes.tensor, b.pred_boxes.tensor]))
    assert c.names == a.names + b.names


def test_instances_cat_with_empty():
    """Concatenating with a zero-length Instances keeps the other's content."""
    a = _instances(2, with_list=False)
    empty = a[torch.zeros(2, dtype=torch.bool)]
    assert len(empty) == 0
    c = Instances.cat([empty, a])
    assert len(c) == 2
    torch.testing.assert_close(c.scores, a.scores)


# ================================================================ ImageList / pad_images


def test_pad_images_single_to_multiple_of_32_bottom_right():
    """One 3x50x70 image pads to 64x96 with the content top-left and the pad value elsewhere."""
    img = torch.rand(3, 50, 70) + 1.0
    out = pad_images([img], size_divisibility=32, pad_value=-7.0)
    assert out.shape == (1, 3, 64, 96)
    torch.testing.assert_close(out[0, :, :50, :70], img)
    assert (out[0, :, 50:, :] == -7.0).all()
    assert (out[0, :, :, 70:] == -7.0).all()


def test_pad_images_multiple_images():
    """Several images pad to the max size rounded up to 32, each at the top-left."""
    a = torch.full((3, 40, 20), 1.0)
    b = torch.full((3, 33, 65), 2.0)
    out = pad_images([a, b], size_divisibility=32, pad_value=0.5)
    # max h = 40 -> 64; max w = 65 -> 96
    assert out.shape == (2, 3, 64, 96)
    torch.testing.assert_close(out[0, :, :40, :20], a)
    torch.testing.assert_close(out[1, :, :33, :65], b)
    assert (out[0, :, 40:, :] == 0.5).all() and (out[0, :, :, 20:] == 0.5).all()
    assert (out[1, :, 33:, :] == 0.5).all() and (out[1, :, :, 65:] == 0.5).all()


def test_pad_images_no_divisibility_and_exact_multiple():
    """size_divisibility 0 pads only to the max size; an exact multiple of 32 is not grown."""
    out = pad_images([torch.ones(1, 5, 7), torch.ones(1, 6, 3)], size_divisibility=0)
    assert out.shape == (2, 1, 6, 7)
    out = pad_images([torch.ones(3, 64, 32)], size_divisibility=32)
    assert out.shape == (1, 3, 64, 32)


def test_imagelist_from_tensors():
    """ImageList.from_tensors records sizes before padding; indexing returns the unpadded image."""
    a, b = torch.rand(3, 10, 12), torch.rand(3, 17, 5)
    il = ImageList.from_tensors([a, b], size_divisibility=32)
    assert il.tensor.shape == (2, 3, 32, 32)
    assert il.image_sizes == [(10, 12), (17, 5)]
    assert len(il) == 2
    torch.testing.assert_close(il[0], a)
    torch.testing.assert_close(il[1], b)


def test_imagelist_from_tensors_empty_raises():
    """ImageList.from_tensors of no images raises ValueError."""
    with pytest.raises(ValueError):
        ImageList.from_tensors([])


# ================================================================ BitMasks


def test_bitmasks_bounding_boxes():
    """get_bounding_boxes is the tight XYXY box (exclusive max), zeros for an empty mask."""
    m = torch.zeros(3, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:8] = True        # rows 2..4, cols 3..7 -> (3, 2, 8, 5)
    m[1, 9, 11] = True           # single pixel in the corner -> (11, 9, 12, 10)
    boxes = BitMasks(m).get_bounding_boxes()
    expected = torch.tensor([[3.0, 2.0, 8.0, 5.0], [11.0, 9.0, 12.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(boxes.tensor, expected)


def test_bitmasks_crop_and_resize_full_mask_all_true():
    """A full mask cropped inside any box inside the image is all True."""
    m = BitMasks(torch.ones(2, 16, 16))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [3.0, 2.5, 9.0, 14.0]])
    out = m.crop_and_resize(boxes, 7)
    assert out.shape == (2, 7, 7) and out.dtype == torch.bool
    assert out.all()


def test_bitmasks_crop_and_resize_half():
    """A box straddling a left-half mask gives the left half of the output True.

    Mask 8x8 with columns 0..3 set; box (2, 0, 6, 8), M=4: with aligned ROIAlign
    each output column samples one point at x = 2 - 0.5 + (j + 0.5) = 2 + j, the
    centres of pixels 2, 3, 4, 5 -> values 1, 1, 0, 0.
    Box (0, 0, 8, 8): column j averages pixels 2j, 2j+1 -> 1, 1, 0, 0.
    """
    t = torch.zeros(2, 8, 8)
    t[:, :, :4] = 1
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, :2] = True
    out = BitMasks(t).crop_and_resize(torch.tensor([[2.0, 0.0, 6.0, 8.0], [0.0, 0.0, 8.0, 8.0]]), 4)
    assert torch.equal(out[0], expected)
    assert torch.equal(out[1], expected)


def test_bitmasks_crop_and_resize_threshold_is_inclusive():
    """A bin averaging exactly 0.5 is foreground (>= 0.5).

    Left-half mask (columns 0..3 of 8), box (3, 0, 5, 8), M = 1: the single bin samples
    x = 3 and x = 4 (values 1 and 0) on every row -> mean exactly 0.5.
    """
    t = torch.zeros(1, 8, 8)
    t[:, :, :4] = 1
    out = BitMasks(t).crop_and_resize(torch.tensor([[3.0, 0.0, 5.0, 8.0]]), 1)
    assert out.tolist() == [[[True]]]
    # shifted one pixel right the bin samples x = 4, 5 (0, 0) -> background
    out = BitMasks(t).crop_and_resize(torch.tensor([[4.0, 0.0, 6.0, 8.0]]), 1)
    assert out.tolist() == [[[False]]]


def test_bitmasks_crop_and_resize_count_mismatch_raises():
    """crop_and_resize needs one box per mask."""
    with pytest.raises(ValueError):
        BitMasks(torch.ones(2, 4, 4)).crop_and_resize(torch.zeros(1, 4), 2)


def test_bitmasks_bad_shape_and_indexing():
    """BitMasks rejects non-3D input; int index keeps a leading dim; cat stacks."""
    with pytest.raises(ValueError):
        BitMasks(torch.ones(4, 4))
    m = BitMasks(torch.rand(3, 4, 5) > 0.5)
    assert m[1].tensor.shape == (1, 4, 5)
    assert torch.equal(m[1].tensor[0], m.tensor[1])
    assert len(m[torch.tensor([True, False, True])]) == 2
    assert len(BitMasks.cat([m, m[0:1]])) == 4


def test_bitmasks_picked_rows_match_copied_rows():
    """Indexing twice (tensor, bool, slice) gives the masks that indexing the tensor itself gives."""
    t = torch.rand(6, 5, 7) > 0.5
    m = BitMasks(t)
    picked = m[torch.tensor([5, 0, 0, 3, 2])][torch.tensor([True, False, True, True, False])][1:]
    assert len(picked) == 2 and tuple(picked.image_size) == (5, 7)
    assert torch.equal(picked.tensor, t[[5, 0, 0, 3, 2]][[0, 2, 3]][1:])


def test_bitmasks_crop_and_resize_of_picked_rows_equals_full_image_roi_align():
    """crop_and_resize of picked masks, which reads only a region around the boxes, equals
    torchvision's ROIAlign of the full float masks at 0.5, for boxes inside, across and
    outside the image edges, small and image-sized."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    centres = torch.rand(4, 2, generator=g) * torch.tensor([w, h])
    radii = 4 + 12 * torch.rand(4, generator=g)
    t = ((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2) < radii[:, None, None] ** 2
    rows = torch.randint(0, 4, (40,), generator=g)
    xy0 = torch.rand(40, 2, generator=g) * torch.tensor([w + 8.0, h + 8.0]) - 6.0
    size = 0.5 + torch.rand(40, 2, generator=g) * torch.tensor([w / 2.0, h / 2.0])
    boxes = torch.cat([xy0, xy0 + size], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, w, h])
    boxes[1] = torch.tensor([w - 3.2, h - 2.7, w + 1.0, h + 0.5])
    boxes[2] = torch.tensor([w + 3.0, 1.0, w + 9.0, 7.0])  # wholly outside: all background
    out = BitMasks(t)[rows].crop_and_resize(boxes, 14)
    rois = torch.cat([rows[:, None].float(), boxes], dim=1)
    expected = roi_align(t[:, None].float(), rois, (14, 14), 1.0, 0, True)[:, 0] >= 0.5
    assert out.shape == (40, 14, 14) and out.dtype == torch.bool
    assert expected[:2].any() and not expected[2].any()
    assert torch.equal(out, expected)


def test_bitmasks_nonempty():
    """nonempty is True exactly for masks with at least one pixel."""
    t = torch.zeros(2, 3, 3, dtype=torch.bool)
    t[1, 2, 2] = True
    assert BitMasks(t).nonempty().tolist() == [False, True]


# ================================================================ PolygonMasks


SQUARE = [0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]


def test_polygon_square_area_and_box():
    """A 10x10 square polygon has area 100 and bounding box (0, 0, 10, 10)."""
    p = PolygonMasks([[SQUARE], [[2.0, 3.0, 6.0, 3.0, 6.0, 8.0]]])  # second: right triangle 4 x 5 / 2
    torch.testing.assert_close(p.area().float(), torch.tensor([100.0, 10.0]))
    torch.testing.assert_close(p.get_bounding_boxes().tensor,
                               torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 6.0, 8.0]]))


def test_polygon_area_two_parts_summed():
    """An instance made of two disjoint polygons has the sum of their areas."""
    other = [20.0, 20.0, 24.0, 20.0, 24.0, 23.0, 20.0, 23.0]  # 4 x 3
    p = PolygonMasks([[SQUARE, other]])
    assert float(p.area()[0]) == pytest.approx(112.0)
    torch.testing.assert_close(p.get_bounding_boxes().tensor, torch.tensor([[0.0, 0.0, 24.0, 23.0]]))


def test_polygon_crop_and_resize_own_box_all_true():
    """A square polygon cropped to its own bounding box fills the whole M x M mask."""
    p = PolygonMasks([[[5.0, 7.0, 25.0, 7.0, 25.0, 37.0, 5.0, 37.0]]])
    out = p.crop_and_resize(torch.tensor([[5.0, 7.0, 25.0, 37.0]]), 28)
    assert out.shape == (1, 28, 28) and out.dtype == torch.bool
    assert out.all()


def test_polygon_crop_and_resize_half():
    """A polygon covering the left half of the box fills the left half of the mask."""
    p = PolygonMasks([[[0.0, 0.0, 5.0, 0.0, 5.0, 10.0, 0.0, 10.0]]])
    out = p.crop_and_resize(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:, :4] = True
    assert torch.equal(out[0], expected)


def test_polygon_crop_and_resize_empty():
    """Zero polygon instances with zero boxes give a (0, M, M) tensor."""
    out = PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 14)
    assert out.shape == (0, 14, 14) and out.dtype == torch.bool


@pytest.mark.parametrize("poly", [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 2.0]])
def test_polygon_too_few_points_raises(poly):
    """A polygon with fewer than 3 points (or an odd number of coordinates) raises ValueError."""
    with pytest.raises(ValueError):
        PolygonMasks([[poly]])


def test_polygon_not_list_raises():
    """PolygonMasks needs a list of lists."""
    with pytest.raises(ValueError):
        PolygonMasks(np.zeros((1, 8)))
    with pytest.raises(ValueError):
        PolygonMasks([np.asarray(SQUARE)])


def test_polygon_indexing_and_cat():
    """PolygonMasks indexing by int, slice, list and bool tensor; cat concatenates in order."""
    polys = [[[float(i), 0.0, i + 1.0, 0.0, i + 1.0, 1.0]] for i in range(4)]
    p = PolygonMasks(polys)
    assert len(p[2]) == 1 and p[2].polygons[0][0][0] == 2.0
    assert [q[0][0] for q in p[1:3].polygons] == [1.0, 2.0]
    assert [q[0][0] for q in p[[3, 0]].polygons] == [3.0, 0.0]
    assert [q[0][0] for q in p[torch.tensor([True, False, False, True])].polygons] == [0.0, 3.0]
    c = PolygonMasks.cat([p[0:1], p[3:4]])
    assert [q[0][0] for q in c.polygons] == [0.0, 3.0]


def _pixel_centres_inside_rect(x0, y0, x1, y1, h, w):
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = xs + 0.5, ys + 0.5
    return (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)


def test_polygons_to_bitmask_rectangle():
    """A rectangle polygon (2,3)-(8,7) rasterizes to the 6 x 4 = 24 pixels whose centres are inside."""
    rect = np.array([2.0, 3.0, 8.0, 3.0, 8.0, 7.0, 2.0, 7.0])
    m = polygons_to_bitmask([rect], 10, 12)
    assert m.shape == (10, 12) and m.dtype == bool
    assert m.sum() == 24
    assert np.array_equal(m, _pixel_centres_inside_rect(2, 3, 8, 7, 10, 12))


def test_polygons_to_bitmask_empty():
    """No polygons gives an all-False mask of the requested size."""
    m = polygons_to_bitmask([], 4, 5)
    assert m.shape == (4, 5) and not m.any()


def test_rasterize_polygons_within_box_does_not_mutate():
    """rasterize_polygons_within_box leaves the caller's polygons unchanged."""
    poly = np.array([4.0, 4.0, 8.0, 4.0, 8.0, 8.0, 4.0, 8.0])
    before = poly.copy()
    m = rasterize_polygons_within_box([poly], np.array([4.0, 4.0, 8.0, 8.0]), 6)
    assert m.all()
    assert np.array_equal(poly, before)


# ================================================================ Keypoints / keypoints_to_heatmap


def test_keypoints_to_heatmap_hand_computed():
    """Cell indices y * 56 + x on a 56 grid, for a ROI whose scale differs in x and y.

    ROI (10, 20, 66, 132): width 56 -> scale_x 1, height 112 -> scale_y 0.5.
    kp (20.5, 40.2):  x = floor(10.5) = 10, y = floor(20.2 * 0.5) = 10 -> 10*56 + 10 = 570
    kp (10, 20):      top-left corner -> 0
    kp (65.9, 131.9): x = floor(55.9) = 55, y = floor(55.95) = 55 -> 55*56 + 55 = 3135
    kp (66, 132):     exactly on the right/bottom border -> last cell 3135
    kp (66, 50):      x on the right border -> 55; y = floor(15) = 15 -> 15*56 + 55 = 895
    """
    roi = torch.tensor([[10.0, 20.0, 66.0, 132.0]])
    kps = torch.tensor([[[20.5, 40.2, 2.0], [10.0, 20.0, 2.0], [65.9, 131.9, 1.0], [66.0, 132.0, 2.0],
                         [66.0, 50.0, 2.0]]])
    heat, valid = keypoints_to_heatmap(kps, roi, 56)
    assert heat.dtype == torch.int64 and valid.dtype == torch.int64
    assert heat.tolist() == [[570, 0, 3135, 3135, 895]]
    assert valid.tolist() == [[1, 1, 1, 1, 1]]


def test_keypoints_to_heatmap_invalid():
    """Invisible keypoints and keypoints outside the ROI are invalid, with index 0."""
    roi = torch.tensor([[0.0, 0.0, 56.0, 56.0]])
    kps = torch.tensor([[[10.0, 10.0, 0.0],    # not labeled
                         [-0.5, 10.0, 2.0],    # left of the ROI
                         [10.0, 56.5, 2.0],    # below the ROI
                         [56.01, 3.0, 2.0],    # just right of the ROI
                         [3.7, 9.2, 1.0]]])    # visible (occluded but labeled): 9*56 + 3 = 507
    heat, valid = keypoints_to_heatmap(kps, roi, 56)
    assert valid.tolist() == [[0, 0, 0, 0, 1]]
    assert heat.tolist() == [[0, 0, 0, 0, 507]]


def test_keypoints_to_heatmap_multiple_rois():
    """Each keypoint row is encoded against its own ROI."""
    rois = torch.tensor([[0.0, 0.0, 56.0, 56.0], [100.0, 100.0, 128.0, 128.0]])  # second: scale 2
    kps = torch.tensor([[[5.5, 6.5, 2.0]], [[110.0, 101.0, 2.0]]])
    # roi 0: (5, 6) -> 6*56 + 5 = 341; roi 1: x = floor(10*2) = 20, y = floor(1*2) = 2 -> 2*56 + 20 = 132
    heat, valid = keypoints_to_heatmap(kps, rois, 56)
    assert heat.tolist() == [[341], [132]]
    assert valid.tolist() == [[1], [1]]


def test_keypoints_to_heatmap_empty_rois():
    """Zero ROIs give (0, K) heatmaps and valid masks."""
    heat, valid = keypoints_to_heatmap(torch.zeros(0, 17, 3), torch.zeros(0, 4), 56)
    assert heat.shape == (0, 17) and valid.shape == (0, 17)


def test_keypoints_structure():
    """Keypoints validates its shape, supports len, slicing, cat and to_heatmap."""
    t = torch.rand(3, 5, 3) * 10
    k = Keypoints(t)
    assert len(k) == 3
    with pytest.raises(ValueError):
        Keypoints(torch.zeros(3, 5, 2))
    torch.testing.assert_close(k[1:].tensor, t[1:])
    torch.testing.assert_close(k[torch.tensor([True, False, True])].tensor, t[[0, 2]])
    assert len(Keypoints.cat([k, k[0:1]])) == 4
    rois = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    h1, v1 = k.to_heatmap(rois, 56)
    h2, v2 = keypoints_to_heatmap(t, rois, 56)
    assert torch.equal(h1, h2) and torch.equal(v1, v2)


def test_keypoints_int_index():
    """Indexing Keypoints with an int returns one instance, shape (1, K, 3) (like Boxes and BitMasks)."""
    t = torch.rand(3, 5, 3)
    one = Keypoints(t)[1]
    assert one.tensor.shape == (1, 5, 3)
    torch.testing.assert_close(one.tensor[0], t[1])
