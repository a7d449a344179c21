"""Behavioural tests for mrcnn_plugin.modeling.roi_heads.keypoint_head (decoding and loss)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mrcnn_plugin.modeling.roi_heads.keypoint_head import heatmaps_to_keypoints, keypoint_rcnn_loss
from mrcnn_plugin.structures import Boxes, Instances, Keypoints


def _gaussian_map(size, cx, cy, sigma=6.0, amp=8.0):
    """A broad peak centred at continuous cell coordinates (cx, cy) (cell i's centre is at i)."""
    ys = torch.arange(size, dtype=torch.float32)[:, None]
    xs = torch.arange(size, dtype=torch.float32)[None, :]
    return amp * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))


# ---------------------------------------------------------------- heatmaps_to_keypoints


def test_decode_same_size_roi_is_cell_centre():
    """ROI as large as the 56 map (resize is the identity): the peak cell (13, 40) decodes to its centre.

    x = x0 + 13 + 0.5, y = y0 + 40 + 0.5; the logit is the map value there and the score
    is 1 / sum(exp(map - max)).
    """
    S = 56
    m = _gaussian_map(S, 13, 40)
    maps = m[None, None]  # R=1, K=1
    rois = torch.tensor([[100.0, 200.0, 156.0, 256.0]])
    out = heatmaps_to_keypoints(maps, rois)
    assert out.shape == (1, 1, 4)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([113.5, 240.5]))
    torch.testing.assert_close(out[0, 0, 2], m[40, 13], atol=1e-4, rtol=1e-5)
    expected_score = 1.0 / torch.exp(m - m.max()).sum()
    torch.testing.assert_close(out[0, 0, 3], expected_score, atol=1e-6, rtol=1e-4)


def test_decode_upsampled_roi_peak_location():
    """ROI twice the map size: output pixel j samples input coordinate (j + 0.5) / 2 - 0.5.

    A broad peak at continuous cell x = 10.3, y = 20.7 on a 28 map in a 56 x 56 ROI:
    the output pixel closest to 10.3 is j = 21 (maps to 10.25; j = 22 maps to 10.75);
    closest to 20.7 is j = 42 (maps to 20.75; j = 41 maps to 20.25).
    So x = x0 + 21.5 and y = y0 + 42.5.
    """
    m = _gaussian_map(28, 10.3, 20.7, sigma=4.0)
    rois = torch.tensor([[7.0, 3.0, 63.0, 59.0]])
    out = heatmaps_to_keypoints(m[None, None], rois)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([7.0 + 21.5, 3.0 + 42.5]))


def test_decode_fractional_roi_width_correction():
    """A fractional ROI size maps pixel centres back with width / ceil(width).

    ROI width 55.5 -> resized to 56 columns, pixel centre (13 + 0.5) * 55.5 / 56; height 56 exact.
    """
    m = _gaussian_map(56, 13, 40)
    rois = torch.tensor([[0.0, 0.0, 55.5, 56.0]])
    out = heatmaps_to_keypoints(m[None, None], rois)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([13.5 * 55.5 / 56.0, 40.5]))


def test_decode_multiple_rois_and_keypoints():
    """Each ROI and keypoint decodes independently (two ROIs x two keypoints, identity resize)."""
    S = 16
    maps = torch.stack([torch.stack([_gaussian_map(S, 2, 3, 3.0), _gaussian_map(S, 11, 7, 3.0)]),
                        torch.stack([_gaussian_map(S, 15, 0, 3.0), _gaussian_map(S, 0, 15, 3.0)])])
    rois = torch.tensor([[0.0, 0.0, 16.0, 16.0], [50.0, 60.0, 66.0, 76.0]])
    out = heatmaps_to_keypoints(maps, rois)
    assert out.shape == (2, 2, 4)
    expected_xy = torch.tensor([[[2.5, 3.5], [11.5, 7.5]],
                                [[65.5, 60.5], [50.5, 75.5]]])
    torch.testing.assert_close(out[..., :2], expected_xy)


def _reference_decode(maps, rois):
    """Independent decode from the docstring: bicubic resize to ceil(ROI size), arg-max pixel centre,
    score = exp(peak) / sum(exp(original map)) computed via logsumexp."""
    R, K = maps.shape[:2]
    out = torch.zeros(R, K, 4)
    for r in range(R):
        x0, y0, x1, y1 = [float(v) for v in rois[r]]
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        wc, hc = math.ceil(w), math.ceil(h)
        up = F.interpolate(maps[r:r + 1], size=(hc, wc), mode="bicubic", align_corners=False)[0]
        for k in range(K):
            flat_idx = int(torch.argmax(up[k]))
            yi, xi = divmod(flat_idx, wc)
            peak = up[k, yi, xi]
            out[r, k, 0] = x0 + (xi + 0.5) * w / wc
            out[r, k, 1] = y0 + (yi + 0.5) * h / hc
            out[r, k, 2] = peak
            out[r, k, 3] = torch.exp(peak - torch.logsumexp(maps[r, k].flatten(), 0))
    return out


def test_decode_matches_reference_random():
    """On random maps and ROIs (incl. a sub-pixel one), the decode equals an independent re-implementation."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 14, 14, generator=g) * 2
    rois = torch.tensor([[3.0, 4.0, 40.7, 29.2], [0.0, 0.0, 14.0, 14.0], [10.0, 10.0, 10.4, 10.2]])
    out = heatmaps_to_keypoints(maps, rois)
    ref = _reference_decode(maps, rois)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_decode_score_in_unit_interval():
    """The 4th channel (spatial-softmax score) lies in (0, 1] for broad and random maps."""
    g = torch.Generator().manual_seed(1)
    maps = torch.cat([torch.randn(2, 3, 56, 56, generator=g),
                      _gaussian_map(56, 20, 30)[None, None].expand(2, 3, 56, 56)], dim=0)
    rois = torch.tensor([[0.0, 0.0, 100.0, 80.0], [5.0, 5.0, 30.0, 35.0]] * 2)
    scores = heatmaps_to_keypoints(maps, rois)[..., 3]
    assert (scores > 0).all() and (scores <= 1).all()


def test_decode_zero_rois():
    """Zero ROIs give a (0, K, 4) tensor."""
    out = heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert out.shape == (0, 17, 4)


# ---------------------------------------------------------------- keypoint_rcnn_loss


def _kp_instances(boxes, kps):
    inst = Instances((100, 100))
    inst.proposal_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    inst.gt_keypoints = Keypoints(torch.as_tensor(kps, dtype=torch.float32))
    return inst


def _two_roi_example():
    """Two images, one ROI each, K = 2 keypoints, S = 4.

    Image 0: ROI (0, 0, 8, 8), scale 0.5.
      kp0 (1, 1) v=2  -> cell (0, 0) -> 0
      kp1 (5, 7) v=2  -> x = floor(2.5) = 2, y = floor(3.5) = 3 -> 14
    Image 1: ROI (10, 10, 14, 14), scale 1.
      kp0 (12.5, 11.2) v=1 -> x = 2, y = 1 -> 6
      kp1 (20, 20) v=2     -> outside the ROI: not counted
    """
    inst0 = _kp_instances([[0.0, 0.0, 8.0, 8.0]], [[[1.0, 1.0, 2.0], [5.0, 7.0, 2.0]]])
    inst1 = _kp_instances([[10.0, 10.0, 14.0, 14.0]], [[[12.5, 11.2, 1.0], [20.0, 20.0, 2.0]]])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, generator=g)
    targets = [((0, 0), 0), ((0, 1), 14), ((1, 0), 6)]
    return logits, [inst0, inst1], targets


def _hand_ce(logits, targets):
    total = 0.0
    for (r, k), t in targets:
        flat = [float(v) for v in logits[r, k].flatten()]
        lse = math.log(sum(math.exp(v) for v in flat))
        total += lse - flat[t]
    return total


def test_keypoint_loss_hand_computed_visible_normalizer():
    """Loss = sum over the 3 valid keypoints of (logsumexp - logit at target cell), divided by 3."""
    logits, instances, targets = _two_roi_example()
    loss = keypoint_rcnn_loss(logits, instances, normalizer=None)
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(_hand_ce(logits, targets) / 3, rel=1e-5)


def test_keypoint_loss_fixed_normalizer():
    """With an explicit normalizer the summed loss is divided by it."""
    logits, instances, targets = _two_roi_example()
    loss = keypoint_rcnn_loss(logits, instances, normalizer=10.0)
    assert float(loss) == pytest.approx(_hand_ce(logits, targets) / 10, rel=1e-5)


def test_keypoint_loss_gradient_only_on_valid():
    """Only the heatmaps of valid keypoints receive gradient."""
    logits, instances, _ = _two_roi_example()
    logits.requires_grad_(True)
    keypoint_rcnn_loss(logits, instances, None).backward()
    grad_norms = logits.grad.flatten(2).abs().sum(-1)
    assert (grad_norms[0] > 0).all() and grad_norms[1, 0] > 0
    assert grad_norms[1, 1] == 0


def test_keypoint_loss_no_visible_keypoints_is_zero():
    """With no visible keypoints the loss is exactly 0, finite, and backpropagates zeros."""
    inst = _kp_instances([[0.0, 0.0, 8.0, 8.0]], [[[1.0, 1.0, 0.0], [5.0, 7.0, 0.0]]])
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = keypoint_rcnn_loss(logits, [inst], None)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_keypoint_loss_no_instances_is_zero():
    """Images without ROIs give loss 0 (finite) on empty logits."""
    empty = _kp_instances(torch.zeros(0, 4), torch.zeros(0, 2, 3))
    logits = torch.zeros(0, 2, 4, 4, requires_grad=True)
    loss = keypoint_rcnn_loss(logits, [empty], None)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
