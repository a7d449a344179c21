"""Behavioural tests for mrcnn_plugin.modeling.roi_heads.mask_head (inference and loss)."""
import math

import pytest
import torch

from mrcnn_plugin.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from mrcnn_plugin.structures import BitMasks, Boxes, Instances, PolygonMasks


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- mask_rcnn_inference


def test_inference_class_specific_picks_predicted_channel():
    """Class-specific logits: each detection gets sigmoid of its predicted class's channel."""
    D, K, M = 3, 4, 5
    logits = torch.arange(D * K, dtype=torch.float32).view(D, K, 1, 1).expand(D, K, M, M) / 10 - 0.5
    classes = torch.tensor([2, 0, 3])
    out = mask_rcnn_inference(logits, classes)
    assert out.shape == (D, 1, M, M)
    for d, k in enumerate(classes.tolist()):
        value = (d * K + k) / 10 - 0.5
        torch.testing.assert_close(out[d, 0], torch.full((M, M), _sigmoid(value)))


def test_inference_class_agnostic_single_channel():
    """Class-agnostic logits (one channel): the class is ignored and the single channel used."""
    logits = torch.tensor([[[[0.0, 2.0], [-2.0, 1.0]]], [[[3.0, 3.0], [3.0, 3.0]]]])  # (2, 1, 2, 2)
    out = mask_rcnn_inference(logits, torch.tensor([5, 7]))
    assert out.shape == (2, 1, 2, 2)
    expected = torch.tensor([[[[0.5, _sigmoid(2.0)], [_sigmoid(-2.0), _sigmoid(1.0)]]],
                             [[[_sigmoid(3.0)] * 2] * 2]])
    torch.testing.assert_close(out, expected)


def test_inference_zero_detections():
    """Zero detections give a (0, 1, M, M) tensor."""
    out = mask_rcnn_inference(torch.zeros(0, 3, 28, 28), torch.zeros(0, dtype=torch.int64))
    assert out.shape == (0, 1, 28, 28)


# ---------------------------------------------------------------- mask_rcnn_loss


def _hand_bce(logits, targets):
    """Mean over all elements of -(t log s(x) + (1 - t) log(1 - s(x)))."""
    total, n = 0.0, 0
    for x, t in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        s = _sigmoid(x)
        total += -(t * math.log(s) + (1 - t) * math.log(1 - s))
        n += 1
    return total / n


def _bitmask_example():
    """Image 8x8; gt mask of instance 0 = left half (columns 0..3), of instance 1 = top 2 rows.

    Proposal 0 = (0, 0, 8, 8), M = 4: aligned ROIAlign bin j averages pixels 2j, 2j+1 -> gt columns 0, 1.
    Proposal 1 = (0, 0, 8, 8): top 2 rows -> gt row 0 only.
    """
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[0, :, :4] = True
    gt[1, :2, :] = True
    inst = Instances((8, 8))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]]))
    inst.gt_classes = torch.tensor([1, 2])
    inst.gt_masks = BitMasks(gt)
    t0 = torch.zeros(4, 4)
    t0[:, :2] = 1
    t1 = torch.zeros(4, 4)
    t1[0, :] = 1
    return inst, torch.stack([t0, t1])


def test_mask_loss_bitmasks_hand_bce():
    """The loss is the mean BCE of each ROI's gt-class channel against the gt mask cropped to its box."""
    inst, targets = _bitmask_example()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    loss = mask_rcnn_loss(logits, [inst])
    selected = torch.stack([logits[0, 1], logits[1, 2]])
    assert float(loss) == pytest.approx(_hand_bce(selected, targets), rel=1e-5)
    # a wrong channel would give a different value (the test can tell)
    wrong = torch.stack([logits[0, 0], logits[1, 0]])
    assert abs(_hand_bce(wrong, targets) - float(loss)) > 1e-3


def test_mask_loss_class_agnostic():
    """With one channel the loss uses it regardless of the gt class."""
    inst, targets = _bitmask_example()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    loss = mask_rcnn_loss(logits, [inst])
    assert float(loss) == pytest.approx(_hand_bce(logits[:, 0], targets), rel=1e-5)


def test_mask_loss_polygons_in_proposal_box():
    """Polygon gt: the target is the polygon rasterized inside the proposal box (left half of the box).

    gt square (10, 10)-(30, 30); proposal (20, 10, 40, 30): the polygon covers the left half
    of the proposal -> with M = 4, columns 0, 1 are 1.
    """
    inst = Instances((50, 50))
    inst.proposal_boxes = Boxes(torch.tensor([[20.0, 10.0, 40.0, 30.0]]))
    inst.gt_classes = torch.tensor([0])
    inst.gt_masks = PolygonMasks([[[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]])
    target = torch.zeros(1, 4, 4)
    target[:, :, :2] = 1
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 4, 4, generator=g)
    loss = mask_rcnn_loss(logits, [inst])
    assert float(loss) == pytest.approx(_hand_bce(logits[:, 0], target), rel=1e-5)


def test_mask_loss_multiple_images_concatenated():
    """Instances of several images are concatenated in order; empty images are skipped."""
    inst, targets = _bitmask_example()
    empty = inst[torch.zeros(2, dtype=torch.bool)]
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 4, 4, generator=g)
    loss = mask_rcnn_loss(logits, [inst, empty, inst])
    selected = torch.stack([logits[0, 1], logits[1, 2], logits[2, 1], logits[3, 2]])
    assert float(loss) == pytest.approx(_hand_bce(selected, torch.cat([targets, targets])), rel=1e-5)


def test_mask_loss_softmax_hand_ce():
    """loss_type 'softmax': per-pixel cross entropy over the K class logits plus a zero background
    logit; target = gt class inside the gt mask, background (index K) outside; mean over pixels."""
    inst, targets = _bitmask_example()
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    loss = mask_rcnn_loss(logits, [inst], loss_type="softmax")
    classes = [1, 2]
    total, n = 0.0, 0
    for r in range(2):
        for i in range(4):
            for j in range(4):
                values = [float(v) for v in logits[r, :, i, j]] + [0.0]
                target = classes[r] if targets[r, i, j] > 0.5 else 3
                total += math.log(sum(math.exp(v) for v in values)) - values[target]
                n += 1
    assert float(loss) == pytest.approx(total / n, rel=1e-5)


def test_inference_softmax_probabilities():
    """loss_type 'softmax' inference: softmax over K classes plus a zero background logit, predicted class."""
    logits = torch.tensor([[1.0, 2.0]]).view(1, 2, 1, 1)
    out = mask_rcnn_inference(logits, torch.tensor([1]), loss_type="softmax")
    expected = math.exp(2.0) / (math.exp(1.0) + math.exp(2.0) + 1.0)
    torch.testing.assert_close(out, torch.full((1, 1, 1, 1), expected))


def test_mask_loss_no_foreground_is_zero_and_grad_safe():
    """With no foreground instances the loss is 0, finite, and backward gives zero gradients."""
    inst, _ = _bitmask_example()
    empty = inst[torch.zeros(2, dtype=torch.bool)]
    logits = torch.zeros(0, 3, 4, 4, requires_grad=True)
    loss = mask_rcnn_loss(logits, [empty, empty])
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    loss = mask_rcnn_loss(logits, [])
    assert float(loss.detach()) == 0.0


def test_mask_loss_gradient_only_on_gt_channel():
    """Only the gt class's channel of each ROI receives gradient."""
    inst, _ = _bitmask_example()
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    mask_rcnn_loss(logits, [inst]).backward()
    per_channel = logits.grad.abs().sum(dim=(2, 3))
    assert per_channel[0, 1] > 0 and per_channel[1, 2] > 0
    assert per_channel[0, 0] == 0 and per_channel[0, 2] == 0
    assert per_channel[1, 0] == 0 and per_channel[1, 1] == 0
