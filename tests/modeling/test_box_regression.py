"""Behavioural tests for mrcnn_plugin.modeling.box_regression."""
import math

import pytest
import torch

from mrcnn_plugin.modeling.box_regression import DEFAULT_SCALE_CLAMP, Box2BoxTransform, smooth_l1_loss


def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 100 + 2
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)])
def test_round_trip(weights):
    """apply_deltas(get_deltas(src, dst), src) == dst for random boxes."""
    t = Box2BoxTransform(weights)
    src, dst = _random_boxes(50, 0), _random_boxes(50, 1)
    deltas = t.get_deltas(src, dst)
    assert deltas.shape == (50, 4)
    torch.testing.assert_close(t.apply_deltas(deltas, src), dst, rtol=1e-5, atol=1e-3)


def test_identity_deltas_are_zero():
    """get_deltas of a box to itself is zero; zero deltas decode to the same box."""
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    b = _random_boxes(5, 2)
    torch.testing.assert_close(t.get_deltas(b, b), torch.zeros(5, 4))
    torch.testing.assert_close(t.apply_deltas(torch.zeros(5, 4), b), b)


def test_hand_computed_deltas():
    """src (0,0,10,20) -> dst (5,0,25,40) with weights (10,10,5,5).

    src: w 10, h 20, centre (5, 10); dst: w 20, h 40, centre (15, 20).
    dx = 10 * (15 - 5) / 10 = 10; dy = 10 * (20 - 10) / 20 = 5;
    dw = 5 * log(20 / 10) = 5 log 2; dh = 5 * log(40 / 20) = 5 log 2.
    """
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    dst = torch.tensor([[5.0, 0.0, 25.0, 40.0]])
    expected = torch.tensor([[10.0, 5.0, 5 * math.log(2), 5 * math.log(2)]])
    torch.testing.assert_close(t.get_deltas(src, dst), expected)
    torch.testing.assert_close(t.apply_deltas(expected, src), dst)


def test_scale_clamp_limits_growth():
    """A huge dw/dh is clamped at log(1000/16): width and height grow at most 62.5x, centre kept."""
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    assert DEFAULT_SCALE_CLAMP == pytest.approx(math.log(62.5))
    src = torch.tensor([[0.0, 0.0, 10.0, 4.0]])  # w 10, h 4, centre (5, 2)
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 1000.0]]), src)
    assert torch.isfinite(out).all()
    # w = 625, h = 250, centre (5, 2)
    torch.testing.assert_close(out, torch.tensor([[5 - 312.5, 2 - 125.0, 5 + 312.5, 2 + 125.0]]))


def test_custom_scale_clamp_and_negative_not_clamped():
    """A custom scale_clamp caps growth; shrinking (negative dw) is not clamped."""
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0))
    src = torch.tensor([[0.0, 0.0, 8.0, 8.0]])  # centre (4, 4)
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 5.0, -math.log(4.0)]]), src)
    # w = 16 (clamped), h = 2
    torch.testing.assert_close(out, torch.tensor([[-4.0, 3.0, 12.0, 5.0]]))


def test_apply_deltas_class_specific_columns():
    """Deltas with K*4 columns decode each class's 4 columns independently."""
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    src = _random_boxes(6, 3)
    targets = [_random_boxes(6, 10 + k) for k in range(3)]
    deltas = torch.cat([t.get_deltas(src, tk) for tk in targets], dim=1)
    assert deltas.shape == (6, 12)
    out = t.apply_deltas(deltas, src)
    assert out.shape == (6, 12)
    for k in range(3):
        torch.testing.assert_close(out[:, 4 * k: 4 * k + 4], targets[k], rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(out[:, 4 * k: 4 * k + 4], t.apply_deltas(deltas[:, 4 * k: 4 * k + 4], src))


def test_apply_deltas_empty():
    """Zero boxes decode to a (0, 4k) tensor."""
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    assert t.apply_deltas(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)
    assert t.get_deltas(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


# ---------------------------------------------------------------- smooth_l1_loss


def test_smooth_l1_beta0_is_l1():
    """beta 0 gives |x - y|."""
    x = torch.tensor([0.0, 1.0, -2.0, 0.3])
    y = torch.tensor([0.5, 1.0, 1.0, -0.1])
    torch.testing.assert_close(smooth_l1_loss(x, y, beta=0.0), torch.tensor([0.5, 0.0, 3.0, 0.4]))


def test_smooth_l1_beta_half_hand_formula():
    """beta 0.5: 0.5 n^2 / 0.5 = n^2 for n < 0.5, n - 0.25 otherwise.

    n = 0.2 -> 0.04; n = 0.5 -> 0.25 (both branches agree); n = 1.0 -> 0.75; n = 3 -> 2.75.
    """
    x = torch.tensor([0.2, -0.5, 1.0, 0.0])
    y = torch.tensor([0.0, 0.0, 0.0, 3.0])
    torch.testing.assert_close(smooth_l1_loss(x, y, beta=0.5), torch.tensor([0.04, 0.25, 0.75, 2.75]))


def test_smooth_l1_reductions():
    """sum and mean reduce the elementwise loss; mean of empty input is 0 (not NaN)."""
    x = torch.tensor([[0.2, 1.0], [0.0, -3.0]])
    y = torch.zeros(2, 2)
    # beta 0.5: 0.04, 0.75, 0, 2.75 -> sum 3.54, mean 0.885
    assert float(smooth_l1_loss(x, y, 0.5, "sum")) == pytest.approx(3.54, abs=1e-6)
    assert float(smooth_l1_loss(x, y, 0.5, "mean")) == pytest.approx(0.885, abs=1e-6)
    assert smooth_l1_loss(x, y, 0.5, "none").shape == (2, 2)
    empty = smooth_l1_loss(torch.zeros(0, 4), torch.zeros(0, 4), 0.0, "mean")
    assert float(empty) == 0.0


def test_smooth_l1_continuous_gradient_at_beta():
    """The gradient is continuous at |x| = beta (x/beta inside, sign outside -> both 1 at beta)."""
    x = torch.tensor([0.5 - 1e-4, 0.5 + 1e-4], requires_grad=True)
    smooth_l1_loss(x, torch.zeros(2), 0.5, "sum").backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0]), atol=1e-3, rtol=0)
