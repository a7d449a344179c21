"""Behavioural tests for mrcnn_plugin.structures.boxes."""
import pytest
import torch
from torchvision.ops import box_iou

from mrcnn_plugin.structures.boxes import (Boxes, box_area, clip_boxes, nonempty_boxes, pairwise_ioa,
                                           pairwise_iou)


def _random_boxes(n, size=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------- box_area


def test_box_area_hand_computed():
    """box_area is width * height for ordinary, one-pixel and zero-width boxes."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0],   # 10 * 5 = 50
                          [3.0, 4.0, 4.0, 5.0],    # one pixel: 1
                          [7.0, 2.0, 7.0, 9.0],    # zero width: 0
                          [1.5, 2.5, 4.0, 3.0]])   # 2.5 * 0.5 = 1.25
    torch.testing.assert_close(box_area(boxes), torch.tensor([50.0, 1.0, 0.0, 1.25]))


def test_box_area_empty():
    """box_area of zero boxes is an empty tensor."""
    assert box_area(torch.zeros(0, 4)).shape == (0,)


# ---------------------------------------------------------------- clip_boxes


def test_clip_boxes_crossing_border_and_outside():
    """clip_boxes clamps x to [0, W] and y to [0, H]; a box fully outside collapses onto the border."""
    h, w = 20, 30
    boxes = torch.tensor([[-5.0, -3.0, 10.0, 10.0],    # crosses top-left
                          [25.0, 15.0, 40.0, 50.0],    # crosses bottom-right
                          [5.0, 5.0, 10.0, 10.0],      # inside, untouched
                          [35.0, 25.0, 45.0, 30.0],    # entirely outside bottom-right
                          [-10.0, -10.0, -1.0, -2.0],  # entirely outside top-left
                          [0.0, 0.0, 30.0, 20.0]])     # exactly the image
    expected = torch.tensor([[0.0, 0.0, 10.0, 10.0],
                             [25.0, 15.0, 30.0, 20.0],
                             [5.0, 5.0, 10.0, 10.0],
                             [30.0, 20.0, 30.0, 20.0],
                             [0.0, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 30.0, 20.0]])
    out = clip_boxes(boxes, (h, w))
    torch.testing.assert_close(out, expected)
    # boxes fully outside end up empty
    assert box_area(out)[3] == 0 and box_area(out)[4] == 0


def test_clip_boxes_returns_new_tensor():
    """clip_boxes does not modify its input."""
    boxes = torch.tensor([[-5.0, -3.0, 50.0, 50.0]])
    before = boxes.clone()
    clip_boxes(boxes, (10, 10))
    torch.testing.assert_close(boxes, before)


def test_clip_boxes_empty():
    """clip_boxes of zero boxes keeps shape (0, 4)."""
    assert clip_boxes(torch.zeros(0, 4), (10, 10)).shape == (0, 4)


# ---------------------------------------------------------------- nonempty_boxes


def test_nonempty_boxes_threshold():
    """nonempty_boxes keeps boxes whose width AND height strictly exceed the threshold."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],  # 10 x 10
                          [0.0, 0.0, 0.0, 10.0],   # zero width
                          [0.0, 0.0, 10.0, 0.0],   # zero height
                          [0.0, 0.0, 1.0, 1.0],    # one pixel
                          [0.0, 0.0, 2.0, 5.0]])   # 2 x 5
    assert nonempty_boxes(boxes).tolist() == [True, False, False, True, True]
    # threshold 1: one-pixel box is not > 1
    assert nonempty_boxes(boxes, threshold=1.0).tolist() == [True, False, False, False, True]
    # threshold 2: the 2-wide box is not > 2
    assert nonempty_boxes(boxes, threshold=2.0).tolist() == [True, False, False, False, False]


def test_nonempty_boxes_inverted_box_is_empty():
    """A box with x2 < x1 (negative width) is empty."""
    assert nonempty_boxes(torch.tensor([[5.0, 0.0, 3.0, 4.0]])).tolist() == [False]


# ---------------------------------------------------------------- pairwise_iou / ioa


def test_pairwise_iou_matches_torchvision():
    """pairwise_iou equals torchvision.ops.box_iou on random boxes."""
    b1 = _random_boxes(7, seed=1)
    b2 = _random_boxes(5, seed=2)
    # make some overlap certain
    b2[0] = b1[0]
    b2[1] = b1[1] + 3.0
    out = pairwise_iou(b1, b2)
    assert out.shape == (7, 5)
    torch.testing.assert_close(out, box_iou(b1, b2))


def test_pairwise_iou_hand_computed():
    """pairwise_iou of two offset squares: inter 25, union 175 -> 1/7; identical -> 1; disjoint -> 0."""
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0],   # inter 5x5=25, union 100+100-25=175
                      [0.0, 0.0, 10.0, 10.0],
                      [10.0, 0.0, 20.0, 10.0],  # touching edge: inter 0
                      [50.0, 50.0, 60.0, 60.0]])
    torch.testing.assert_close(pairwise_iou(a, b), torch.tensor([[1.0 / 7.0, 1.0, 0.0, 0.0]]))


def test_pairwise_iou_both_empty_is_zero_not_nan():
    """Two zero-area boxes (even identical) get IoU 0 rather than NaN."""
    a = torch.tensor([[3.0, 3.0, 3.0, 8.0], [1.0, 1.0, 1.0, 1.0]])
    out = pairwise_iou(a, a)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.zeros(2, 2))


def test_pairwise_iou_empty_shapes():
    """0xM and Nx0 inputs give 0xM and Nx0 outputs."""
    b = _random_boxes(3)
    assert pairwise_iou(torch.zeros(0, 4), b).shape == (0, 3)
    assert pairwise_iou(b, torch.zeros(0, 4)).shape == (3, 0)
    assert pairwise_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)


def test_pairwise_iou_symmetric():
    """pairwise_iou(a, b) is the transpose of pairwise_iou(b, a)."""
    b1, b2 = _random_boxes(4, seed=3), _random_boxes(6, seed=4)
    torch.testing.assert_close(pairwise_iou(b1, b2), pairwise_iou(b2, b1).T)


def test_pairwise_ioa_hand_computed():
    """pairwise_ioa is intersection over the area of the second box."""
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0],   # inter 25 / area 100
                      [2.0, 2.0, 4.0, 4.0],     # fully inside a: 4 / 4 = 1
                      [0.0, 0.0, 20.0, 20.0],   # contains a: 100 / 400
                      [30.0, 30.0, 40.0, 40.0],  # disjoint
                      [5.0, 5.0, 5.0, 5.0]])    # degenerate: 0, not NaN
    out = pairwise_ioa(a, b)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[0.25, 1.0, 0.25, 0.0, 0.0]]))


def test_pairwise_ioa_reference():
    """pairwise_ioa equals an independent broadcast computation on random boxes."""
    b1, b2 = _random_boxes(5, seed=5), _random_boxes(6, seed=6)
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    torch.testing.assert_close(pairwise_ioa(b1, b2), inter / area2[None, :])


def test_pairwise_ioa_empty_shapes():
    """pairwise_ioa with 0 boxes on either side gives an empty matrix of the right shape."""
    b = _random_boxes(2)
    assert pairwise_ioa(torch.zeros(0, 4), b).shape == (0, 2)
    assert pairwise_ioa(b, torch.zeros(0, 4)).shape == (2, 0)


# ---------------------------------------------------------------- Boxes


def test_boxes_from_list_and_empty():
    """Boxes accepts a python list and any empty tensor (reshaped to (0, 4) float)."""
    b = Boxes([[0, 0, 1, 2]])
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 4)
    e = Boxes(torch.zeros(0))
    assert e.tensor.shape == (0, 4) and len(e) == 0
    assert Boxes([]).tensor.shape == (0, 4)


@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 4, 1)])
def test_boxes_bad_shape_raises(shape):
    """Boxes rejects tensors that are not [N, 4]."""
    with pytest.raises(ValueError):
        Boxes(torch.ones(shape))


def test_boxes_indexing():
    """Boxes indexing by int keeps a [1, 4] tensor; slice and bool mask select rows."""
    t = torch.arange(20, dtype=torch.float32).view(5, 4)
    b = Boxes(t)
    assert len(b) == 5
    one = b[2]
    assert isinstance(one, Boxes) and one.tensor.shape == (1, 4)
    torch.testing.assert_close(one.tensor, t[2:3])
    neg = b[-1]
    torch.testing.assert_close(neg.tensor, t[4:5])
    sl = b[1:4]
    assert len(sl) == 3
    torch.testing.assert_close(sl.tensor, t[1:4])
    mask = torch.tensor([True, False, True, False, True])
    torch.testing.assert_close(b[mask].tensor, t[[0, 2, 4]])
    assert len(b[torch.zeros(5, dtype=torch.bool)]) == 0


def test_boxes_cat():
    """Boxes.cat stacks rows in order; an empty list gives zero boxes."""
    a = Boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    b = Boxes(torch.tensor([[2.0, 2.0, 3.0, 3.0], [4.0, 4.0, 5.0, 6.0]]))
    c = Boxes.cat([a, b, Boxes(torch.zeros(0, 4))])
    assert len(c) == 3
    torch.testing.assert_close(c.tensor, torch.cat([a.tensor, b.tensor]))
    assert len(Boxes.cat([])) == 0


def test_boxes_scale_in_place():
    """Boxes.scale multiplies x by scale_x and y by scale_y in place."""
    b = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    b.scale(2.0, 0.5)
    torch.testing.assert_close(b.tensor, torch.tensor([[2.0, 1.0, 6.0, 2.0]]))


def test_boxes_clip_in_place_and_area_nonempty():
    """Boxes.clip modifies the object; area and nonempty agree with the functions."""
    b = Boxes(torch.tensor([[-5.0, -5.0, 5.0, 5.0], [12.0, 0.0, 20.0, 5.0]]))
    ret = b.clip((10, 10))
    assert ret is None
    torch.testing.assert_close(b.tensor, torch.tensor([[0.0, 0.0, 5.0, 5.0], [10.0, 0.0, 10.0, 5.0]]))
    torch.testing.assert_close(b.area(), torch.tensor([25.0, 0.0]))
    assert b.nonempty().tolist() == [True, False]


def test_boxes_centers_and_clone():
    """get_centers is the midpoint; clone is independent of the original."""
    b = Boxes(torch.tensor([[0.0, 2.0, 4.0, 10.0]]))
    torch.testing.assert_close(b.get_centers(), torch.tensor([[2.0, 6.0]]))
    c = b.clone()
    c.tensor[0, 0] = 100.0
    assert b.tensor[0, 0] == 0.0


def test_boxes_inside_box():
    """inside_box keeps boxes within (height, width), with boundary slack."""
    b = Boxes(torch.tensor([[0.0, 0.0, 9.0, 9.0], [-1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 5.0]]))
    assert b.inside_box((10, 10)).tolist() == [True, False, False]
    assert b.inside_box((10, 10), boundary_threshold=2).tolist() == [True, True, True]
