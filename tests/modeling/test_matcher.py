"""Behavioural tests for mrcnn_plugin.modeling.matcher.Matcher."""
import pytest
import torch

from mrcnn_plugin.modeling.matcher import Matcher


def _rpn(allow_low_quality=False):
    return Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=allow_low_quality)


def _roi():
    return Matcher([0.5], [0, 1], allow_low_quality_matches=False)


def test_rpn_thresholds_labels():
    """RPN matcher: best IoU < 0.3 -> 0, [0.3, 0.7) -> -1, >= 0.7 -> 1; matches index the argmax gt."""
    # 2 gt x 6 predictions; columns' best IoU: 0.1, 0.3, 0.5, 0.69, 0.7, 0.95
    iou = torch.tensor([[0.1, 0.3, 0.2, 0.69, 0.1, 0.95],
                        [0.0, 0.1, 0.5, 0.10, 0.7, 0.20]])
    matches, labels = _rpn()(iou)
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    assert matches.tolist() == [0, 0, 1, 0, 1, 0]
    assert labels.tolist() == [0, -1, -1, -1, 1, 1]


def test_roi_threshold_labels():
    """ROI-heads matcher: best IoU < 0.5 -> 0 (background), >= 0.5 -> 1."""
    iou = torch.tensor([[0.49, 0.5, 0.0, 0.8],
                        [0.20, 0.1, 0.0, 0.9]])
    matches, labels = _roi()(iou)
    assert labels.tolist() == [0, 1, 0, 1]
    assert matches.tolist() == [0, 0, 0, 1]


def test_low_quality_matches_promote_best_anchor():
    """allow_low_quality_matches makes each gt's best prediction positive even below 0.7."""
    # gt 0's best is pred 1 (0.4); gt 1's best is pred 3 (0.6); pred 0 is background.
    iou = torch.tensor([[0.1, 0.4, 0.2, 0.0],
                        [0.0, 0.1, 0.3, 0.6]])
    _, labels_plain = _rpn(False)(iou)
    assert labels_plain.tolist() == [0, -1, -1, -1]
    matches, labels = _rpn(True)(iou)
    assert labels.tolist() == [0, 1, -1, 1]
    assert matches.tolist() == [0, 0, 1, 1]


def test_low_quality_matches_ties_all_promoted():
    """All predictions tied for a gt's highest IoU become positive."""
    iou = torch.tensor([[0.4, 0.1, 0.4, 0.4, 0.2]])
    _, labels = _rpn(True)(iou)
    assert labels.tolist() == [1, 0, 1, 1, 0]


def test_low_quality_matches_not_when_best_iou_zero():
    """A gt overlapping nothing (best IoU 0) does not turn predictions positive."""
    iou = torch.tensor([[0.0, 0.0, 0.0],
                        [0.0, 0.5, 0.1]])
    _, labels = _rpn(True)(iou)
    # gt 0 has best IoU 0 -> ignored; gt 1 promotes pred 1 (0.5 is otherwise ignored)
    assert labels.tolist() == [0, 1, 0]
    _, labels = _rpn(True)(torch.zeros(2, 4))
    assert labels.tolist() == [0, 0, 0, 0]


def test_low_quality_matches_keep_existing_positive():
    """A prediction already above 0.7 stays positive with low-quality matching on."""
    iou = torch.tensor([[0.9, 0.8, 0.1]])
    _, labels = _rpn(True)(iou)
    assert labels.tolist() == [1, 1, 0]


def test_empty_ground_truth_all_background():
    """With zero ground truths, every prediction gets the first label (background) and match 0."""
    for matcher in (_rpn(), _rpn(True), _roi()):
        matches, labels = matcher(torch.zeros(0, 5))
        assert matches.tolist() == [0] * 5
        assert labels.tolist() == [0] * 5
        assert labels.dtype == torch.int8 and matches.dtype == torch.int64


def test_zero_predictions():
    """Zero predictions give empty outputs."""
    matches, labels = _rpn(True)(torch.zeros(3, 0))
    assert matches.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize("thresholds,labels", [
    ([0.7, 0.3], [0, -1, 1]),     # unsorted
    ([-0.1, 0.7], [0, -1, 1]),    # negative
    ([0.3, 0.7], [0, 1]),         # too few labels
    ([0.5], [0, -1, 1]),          # too many labels
    ([0.5], [0, 2]),              # invalid label value
])
def test_bad_thresholds_or_labels_raise(thresholds, labels):
    """Unsorted or negative thresholds, a wrong number of labels, or labels outside {-1, 0, 1} raise."""
    with pytest.raises(ValueError):
        Matcher(thresholds, labels)
