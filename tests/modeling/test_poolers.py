"""Behavioural tests for mrcnn_plugin.modeling.poolers."""
import pytest
import torch
from torchvision.ops import roi_align, roi_pool

from mrcnn_plugin.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]  # levels 2..5


def _square(cx, cy, side):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def test_assign_levels_canonical():
    """224x224 -> level 4, 112 -> 3, 448 -> 5, 56 -> 2 (indices from min level 2)."""
    boxes = torch.tensor([_square(300, 300, 224), _square(300, 300, 112), _square(300, 300, 448),
                          _square(300, 300, 56)])
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [2, 1, 3, 0]


def test_assign_levels_clamped():
    """Tiny, one-pixel and zero-area boxes clamp to the min level; huge ones to the max."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0],        # one pixel
                          [5.0, 5.0, 5.0, 9.0],        # zero width
                          [0.0, 0.0, 10.0, 10.0],      # tiny
                          [0.0, 0.0, 5000.0, 5000.0]])  # huge
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.tolist() == [0, 0, 0, 3]


def test_assign_levels_non_square_and_multi_image():
    """Level uses sqrt(area): a 112x448 box (sqrt area 224) goes to level 4; images are concatenated."""
    a = torch.tensor([[0.0, 0.0, 112.0, 448.0]])
    b = torch.tensor([[0.0, 0.0, 447.0, 447.0], [0.0, 0.0, 111.0, 111.0]])  # just under 448 / 112
    levels = assign_boxes_to_levels([a, b], 2, 5, 224, 4)
    assert levels.tolist() == [2, 2, 0]


def test_convert_boxes_to_pooler_format():
    """Rows are (image index, x0, y0, x1, y1), images in order; empty images add nothing."""
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b = torch.zeros(0, 4)
    c = torch.tensor([[5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
    out = convert_boxes_to_pooler_format([a, b, c])
    expected = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0],
                             [2.0, 5.0, 6.0, 7.0, 8.0],
                             [2.0, 9.0, 10.0, 11.0, 12.0]])
    torch.testing.assert_close(out, expected)
    assert convert_boxes_to_pooler_format([torch.zeros(0, 4)]).shape == (0, 5)


def _pyramid(n_images=2, channels=3, base=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # input 256x256 -> p2 64, p3 32, p4 16, p5 8
    return [torch.randn(n_images, channels, base // 2 ** i, base // 2 ** i, generator=g) for i in range(4)]


def _boxes_per_image():
    a = torch.tensor([[10.0, 12.0, 40.0, 50.0],       # ~35 -> level 2
                      [20.0, 30.0, 140.0, 150.0],     # 120 -> level 3
                      [0.0, 0.0, 250.0, 240.0],       # ~245 -> level 4
                      [100.0, 100.0, 101.0, 101.0]])  # one pixel -> level 2
    b = torch.tensor([[3.5, 7.25, 200.0, 230.0],      # ~209 -> level 3
                      [0.0, 0.0, 256.0, 256.0],       # 256 -> level 4
                      [60.0, 10.0, 62.0, 90.0]])      # thin -> level 2
    return [a, b]


def test_roipooler_multilevel_matches_direct_roi_align():
    """ROIAlignV2 output equals torchvision roi_align (aligned=True) on each box's own level."""
    x = _pyramid()
    boxes = _boxes_per_image()
    pooler = ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2")
    out = pooler(x, boxes)
    assert out.shape == (7, 3, 7, 7)

    # independent level assignment: floor(4 + log2(sqrt(area) / 224)) clamped to [2, 5]
    rows = []
    for img, bs in enumerate(boxes):
        for b in bs:
            side = float(((b[2] - b[0]) * (b[3] - b[1])).sqrt())
            lvl = 4 + torch.floor(torch.log2(torch.tensor(side / 224.0 + 1e-8))).item()
            lvl = int(min(max(lvl, 2), 5))
            rows.append((img, b, lvl))
    assert sorted({r[2] for r in rows}) == [2, 3, 4], "test should exercise several levels"
    for i, (img, b, lvl) in enumerate(rows):
        roi = torch.cat([torch.tensor([float(img)]), b])[None]
        ref = roi_align(x[lvl - 2], roi, (7, 7), spatial_scale=2.0 ** -lvl, sampling_ratio=0, aligned=True)
        torch.testing.assert_close(out[i], ref[0])


def test_roipooler_single_level():
    """With one scale, every box is pooled from that level."""
    x = [torch.randn(1, 2, 20, 20)]
    boxes = [torch.tensor([[0.0, 0.0, 300.0, 300.0], [10.0, 10.0, 20.0, 20.0]])]
    out = ROIPooler(5, [1 / 16], 0, "ROIAlignV2")(x, boxes)
    ref = roi_align(x[0], convert_boxes_to_pooler_format(boxes), (5, 5), 1 / 16, 0, True)
    torch.testing.assert_close(out, ref)


def test_roipooler_roialign_v1():
    """'ROIAlign' is torchvision roi_align with aligned=False, with the given sampling ratio."""
    x = _pyramid(n_images=1, seed=1)
    boxes = [torch.tensor([[10.0, 12.0, 40.0, 50.0], [0.0, 0.0, 250.0, 240.0]])]  # levels 2 and 4
    out = ROIPooler(4, SCALES, 2, "ROIAlign")(x, boxes)
    ref0 = roi_align(x[0], torch.tensor([[0.0, 10.0, 12.0, 40.0, 50.0]]), (4, 4), 1 / 4, 2, False)
    ref1 = roi_align(x[2], torch.tensor([[0.0, 0.0, 0.0, 250.0, 240.0]]), (4, 4), 1 / 16, 2, False)
    torch.testing.assert_close(out[0], ref0[0])
    torch.testing.assert_close(out[1], ref1[0])
    # and aligned=False genuinely differs from aligned=True here
    v2 = ROIPooler(4, SCALES, 2, "ROIAlignV2")(x, boxes)
    assert not torch.allclose(out, v2)


def test_roipooler_roipool():
    """'ROIPool' is torchvision roi_pool on the assigned level."""
    x = _pyramid(n_images=1, seed=2)
    boxes = [torch.tensor([[10.0, 12.0, 40.0, 50.0], [20.0, 30.0, 140.0, 150.0]])]  # levels 2 and 3
    out = ROIPooler(3, SCALES, 0, "ROIPool")(x, boxes)
    ref0 = roi_pool(x[0], torch.tensor([[0.0, 10.0, 12.0, 40.0, 50.0]]), (3, 3), 1 / 4)
    ref1 = roi_pool(x[1], torch.tensor([[0.0, 20.0, 30.0, 140.0, 150.0]]), (3, 3), 1 / 8)
    torch.testing.assert_close(out[0], ref0[0])
    torch.testing.assert_close(out[1], ref1[0])


def test_roipooler_hand_value_constant_feature():
    """On a constant feature map, every pooled bin of a box inside the map equals that constant."""
    x = [torch.full((1, 1, 16, 16), 3.0), torch.full((1, 1, 8, 8), 5.0)]
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 20.0],        # side 16 -> level 2 (scale 1/4)
                           [0.0, 0.0, 32.0, 32.0]])]      # side 32 -> clamped at min level too
    pooler = ROIPooler(2, [1 / 4, 1 / 8], 0, "ROIAlignV2", canonical_box_size=16, canonical_level=3)
    out = pooler(x, boxes)
    # canonical 16 at level 3: side 16 -> 3, side 32 -> 4 clamped to 3 -> both from x[1]
    torch.testing.assert_close(out, torch.full((2, 1, 2, 2), 5.0))


def test_roipooler_empty_boxes():
    """No boxes give a (0, C, S, S) tensor, for one image or several, single- or multi-level."""
    x = _pyramid(n_images=2)
    out = ROIPooler(7, SCALES, 0, "ROIAlignV2")(x, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert out.shape == (0, 3, 7, 7)
    out = ROIPooler(7, [1 / 4], 0, "ROIAlignV2")(x[:1], [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert out.shape == (0, 3, 7, 7)


def test_roipooler_one_image_empty():
    """An image with no boxes beside one with boxes: output rows are the other image's boxes."""
    x = _pyramid(n_images=2, seed=3)
    b = torch.tensor([[10.0, 12.0, 40.0, 50.0]])
    out = ROIPooler(5, SCALES, 0, "ROIAlignV2")(x, [torch.zeros(0, 4), b])
    ref = roi_align(x[0], torch.tensor([[1.0, 10.0, 12.0, 40.0, 50.0]]), (5, 5), 1 / 4, 0, True)
    torch.testing.assert_close(out, ref)


def test_roipooler_unknown_type_raises():
    """An unknown pooler type raises ValueError."""
    with pytest.raises(ValueError):
        ROIPooler(7, SCALES, 0, "ROIMagic")


@pytest.mark.parametrize("scales", [[1 / 3], [1 / 4, 1 / 16]])
def test_roipooler_bad_scales_raise(scales):
    """Scales that are not powers of 1/2, or skip a level, raise ValueError."""
    with pytest.raises(ValueError):
        ROIPooler(7, scales, 0, "ROIAlignV2")


def test_prepare_features_converts_once_and_changes_nothing():
    """On CPU the ATen ROIAlign reads channels-last: prepare_features converts NCHW levels to it
    (a second call returns the very same tensors, so poolers sharing maps copy them once), and
    pooling prepared or unprepared maps gives the same values, with gradients as well."""
    x = _pyramid()
    pooler = ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2")
    prepared = pooler.prepare_features(x)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in prepared)
    assert all(again is p for again, p in zip(pooler.prepare_features(prepared), prepared))
    boxes = _boxes_per_image()
    torch.testing.assert_close(pooler(prepared, boxes), pooler(x, boxes), atol=0, rtol=0)
    leaves = [level.clone().requires_grad_() for level in x]
    pooler(pooler.prepare_features(leaves), boxes).square().sum().backward()
    reference = [level.clone().requires_grad_() for level in x]
    pooler(reference, boxes).square().sum().backward()
    for got, expected in zip(leaves, reference):
        torch.testing.assert_close(got.grad, expected.grad)
    # ROIPool's torchvision kernel reads any layout: nothing to convert
    roipool = ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIPool")
    assert all(p is level for p, level in zip(roipool.prepare_features(x), x))
