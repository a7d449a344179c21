"""Behavioural tests for mrcnn_plugin.modeling.roi_heads.fast_rcnn.fast_rcnn_inference_single_image."""
import math

import torch

from mrcnn_plugin.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image

IMG = (100, 120)  # (h, w)


def _infer(boxes, scores, score_thresh=0.05, nms_thresh=0.5, topk=100, image_size=IMG):
    return fast_rcnn_inference_single_image(boxes, scores, image_size, score_thresh, nms_thresh, topk)


def _rep(box, k):
    """The same box for each of k classes: Tensor[k * 4]."""
    return torch.tensor(box * k, dtype=torch.float32)


def test_score_threshold_strict_and_background_ignored():
    """Only (ROI, class) pairs with score > thresh survive; the background column is never a class."""
    # 3 ROIs, K = 2 classes (+ background last); boxes far apart so NMS does nothing
    boxes = torch.stack([_rep([0, 0, 10, 10], 2), _rep([30, 30, 40, 40], 2), _rep([60, 60, 70, 70], 2)])
    scores = torch.tensor([[0.90, 0.05, 0.05],    # class 0 kept; class 1 at exactly 0.05 dropped
                           [0.02, 0.03, 0.95],    # background-dominated: nothing kept
                           [0.30, 0.60, 0.10]])   # both classes kept
    b, s, c, idx = _infer(boxes, scores)
    # sorted by decreasing score
    torch.testing.assert_close(s, torch.tensor([0.90, 0.60, 0.30]))
    assert c.tolist() == [0, 1, 0]
    assert idx.tolist() == [0, 2, 2]
    torch.testing.assert_close(b, torch.tensor([[0.0, 0.0, 10.0, 10.0], [60.0, 60.0, 70.0, 70.0],
                                                [60.0, 60.0, 70.0, 70.0]]))
    assert c.dtype == torch.int64
    assert (c < 2).all()


def test_per_class_nms():
    """Overlapping boxes of different classes both survive; of the same class the lower one is suppressed."""
    a = [10.0, 10.0, 50.0, 50.0]
    b = [12.0, 12.0, 52.0, 52.0]  # IoU with a = 38^2 / (2 * 1600 - 38^2) ~ 0.82
    # different classes: ROI 0 class 0, ROI 1 class 1
    boxes = torch.stack([_rep(a, 2), _rep(b, 2)])
    scores = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.8, 0.2]])
    _, s, c, idx = _infer(boxes, scores)
    assert c.tolist() == [0, 1] and idx.tolist() == [0, 1]
    torch.testing.assert_close(s, torch.tensor([0.9, 0.8]))
    # same class: the 0.8 one is suppressed
    scores = torch.tensor([[0.9, 0.0, 0.1], [0.8, 0.0, 0.2]])
    bx, s, c, idx = _infer(boxes, scores)
    assert c.tolist() == [0] and idx.tolist() == [0]
    torch.testing.assert_close(bx, torch.tensor([a]))
    # with a looser NMS threshold (0.9 > IoU) both survive
    _, s, _, _ = _infer(boxes, scores, nms_thresh=0.9)
    assert s.numel() == 2


def test_class_specific_boxes_per_class():
    """Each kept class uses its own 4 box columns."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 20.0, 20.0, 40.0, 40.0]])
    scores = torch.tensor([[0.5, 0.4, 0.1]])
    b, s, c, _ = _infer(boxes, scores)
    assert c.tolist() == [0, 1]
    torch.testing.assert_close(b, torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]))


def test_topk():
    """topk_per_image keeps the k best; -1 keeps all."""
    n = 6
    boxes = torch.stack([_rep([15.0 * i, 0, 15.0 * i + 10, 10], 1) for i in range(n)])
    probs = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.2, 0.6])
    scores = torch.stack([probs, 1 - probs], dim=1)
    _, s, _, idx = _infer(boxes, scores, topk=3)
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7, 0.6]))
    assert idx.tolist() == [1, 3, 5]
    _, s, _, _ = _infer(boxes, scores, topk=-1)
    assert s.numel() == n
    _, s, _, _ = _infer(boxes, scores, topk=0)
    assert s.numel() == 0


def test_boxes_clipped():
    """Boxes crossing the image are clipped to (h, w) = (100, 120)."""
    boxes = torch.tensor([[-10.0, -5.0, 130.0, 110.0]])
    scores = torch.tensor([[0.9, 0.1]])
    b, _, _, _ = _infer(boxes, scores)
    torch.testing.assert_close(b, torch.tensor([[0.0, 0.0, 120.0, 100.0]]))


def test_non_finite_rows_dropped_and_indices_map_back():
    """ROIs with a NaN/inf box or score are dropped; returned ROI indices refer to the original rows."""
    boxes = torch.stack([_rep([0, 0, 10, 10], 1), _rep([20, 20, 30, 30], 1), _rep([40, 40, 50, 50], 1),
                         _rep([60, 60, 70, 70], 1)])
    boxes[0, 2] = math.nan
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [math.inf, 0.0], [0.7, 0.3]])
    b, s, c, idx = _infer(boxes, scores)
    assert idx.tolist() == [1, 3]
    torch.testing.assert_close(s, torch.tensor([0.8, 0.7]))
    torch.testing.assert_close(b, torch.tensor([[20.0, 20.0, 30.0, 30.0], [60.0, 60.0, 70.0, 70.0]]))


def test_class_agnostic_boxes():
    """With [R, 4] boxes every class of a ROI shares its box."""
    boxes = torch.tensor([[5.0, 5.0, 25.0, 25.0]])
    scores = torch.tensor([[0.6, 0.3, 0.1]])
    b, s, c, idx = _infer(boxes, scores)
    assert c.tolist() == [0, 1] and idx.tolist() == [0, 0]
    torch.testing.assert_close(b, torch.tensor([[5.0, 5.0, 25.0, 25.0]] * 2))


def test_zero_proposals():
    """Zero proposals give zero detections of the right shapes."""
    b, s, c, idx = _infer(torch.zeros(0, 8), torch.zeros(0, 3))
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,) and idx.shape == (0,)


def test_nothing_above_threshold():
    """No score above the threshold gives zero detections."""
    b, s, c, idx = _infer(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([[0.01, 0.99]]))
    assert b.shape == (0, 4) and s.numel() == 0
