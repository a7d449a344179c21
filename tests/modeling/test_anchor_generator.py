"""Behavioural tests for mrcnn_plugin.modeling.anchor_generator."""
import math

import pytest
import torch

from mrcnn_plugin.modeling.anchor_generator import DefaultAnchorGenerator, generate_cell_anchors


def _wh(anchors):
    return anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]


def test_cell_anchors_size32_ratios():
    """Size 32, ratios 0.5/1/2: every area is 32^2, h/w equals the ratio, centred at the origin."""
    a = generate_cell_anchors([32], [0.5, 1.0, 2.0]).double()
    assert a.shape == (3, 4)
    w, h = _wh(a)
    torch.testing.assert_close(w * h, torch.full((3,), 1024.0, dtype=torch.float64), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=1e-5, atol=0)
    centres = (a[:, :2] + a[:, 2:]) / 2
    torch.testing.assert_close(centres, torch.zeros(3, 2, dtype=torch.float64), atol=1e-5, rtol=0)


def test_cell_anchors_hand_values_not_rounded():
    """Ratio 0.5 of size 32: w = sqrt(2048) = 45.2548..., h = 22.6274... (no rounding); ratio 1: +-16."""
    a = generate_cell_anchors([32], [0.5, 1.0])
    w = math.sqrt(2048.0)
    h = 0.5 * w
    torch.testing.assert_close(a[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    torch.testing.assert_close(a[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))


def test_cell_anchors_sizes_vary_slowest():
    """With sizes (32, 64) x ratios (0.5, 1, 2), the first three anchors are size 32, the last three 64."""
    a = generate_cell_anchors([32, 64], [0.5, 1.0, 2.0]).double()
    assert a.shape == (6, 4)
    w, h = _wh(a)
    areas = w * h
    torch.testing.assert_close(areas, torch.tensor([1024.0] * 3 + [4096.0] * 3, dtype=torch.float64),
                               rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 2, dtype=torch.float64),
                               rtol=1e-5, atol=0)


def _features(shapes):
    return [torch.zeros(1, 2, h, w) for h, w in shapes]


def test_anchor_count_per_level():
    """Each level has H * W * A anchors."""
    gen = DefaultAnchorGenerator([[32], [64], [128]], [[0.5, 1.0, 2.0]], strides=[4, 8, 16])
    assert gen.num_cell_anchors == [3, 3, 3]
    anchors = gen(_features([(5, 7), (3, 4), (1, 2)]))
    assert [a.shape for a in anchors] == [(5 * 7 * 3, 4), (3 * 4 * 3, 4), (1 * 2 * 3, 4)]


def test_anchor_ordering_and_shifts_offset0():
    """Anchor index (y * W + x) * A + a is cell anchor a shifted by (x * stride, y * stride)."""
    sizes, ratios, stride = [16.0, 40.0], [0.5, 1.0, 2.0], 8
    gen = DefaultAnchorGenerator([sizes], [ratios], strides=[stride], offset=0.0)
    H, W = 3, 4
    anchors = gen(_features([(H, W)]))[0]
    cell = generate_cell_anchors(sizes, ratios)
    A = cell.shape[0]
    assert anchors.shape == (H * W * A, 4)
    for y in range(H):
        for x in range(W):
            for a in range(A):
                shift = torch.tensor([x * stride, y * stride, x * stride, y * stride], dtype=torch.float32)
                torch.testing.assert_close(anchors[(y * W + x) * A + a], cell[a] + shift)


def test_anchor_offset_half():
    """Offset 0.5 moves every anchor centre to ((x + 0.5) * stride, (y + 0.5) * stride)."""
    stride = 16
    gen = DefaultAnchorGenerator([[32]], [[1.0]], strides=[stride], offset=0.5)
    anchors = gen(_features([(2, 3)]))[0]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    expected = torch.tensor([[8.0, 8.0], [24.0, 8.0], [40.0, 8.0],
                             [8.0, 24.0], [24.0, 24.0], [40.0, 24.0]])
    torch.testing.assert_close(centres, expected)
    # first anchor: centre (8, 8), half-size 16
    torch.testing.assert_close(anchors[0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))


def test_sizes_per_level_vs_broadcast():
    """One sizes list per level uses each on its own level; a single list is used on every level."""
    per_level = DefaultAnchorGenerator([[32], [64]], [[1.0]], strides=[4, 8])
    a0, a1 = per_level(_features([(1, 1), (1, 1)]))
    torch.testing.assert_close(a0, torch.tensor([[-16.0, -16.0, 16.0, 16.0]]))
    torch.testing.assert_close(a1, torch.tensor([[-32.0, -32.0, 32.0, 32.0]]))

    broadcast = DefaultAnchorGenerator([[32, 64]], [[1.0]], strides=[4, 8])
    assert broadcast.num_cell_anchors == [2, 2]
    b0, b1 = broadcast(_features([(1, 1), (1, 1)]))
    expected = torch.tensor([[-16.0, -16.0, 16.0, 16.0], [-32.0, -32.0, 32.0, 32.0]])
    torch.testing.assert_close(b0, expected)
    torch.testing.assert_close(b1, expected)


def test_ratios_per_level():
    """Aspect ratios may also be given per level."""
    gen = DefaultAnchorGenerator([[32]], [[1.0], [0.5, 2.0]], strides=[4, 8])
    assert gen.num_cell_anchors == [1, 2]


@pytest.mark.parametrize("sizes,ratios", [
    ([[32], [64]], [[1.0]]),          # 2 size lists for 3 levels
    ([[32]], [[1.0], [2.0]]),         # 2 ratio lists for 3 levels
    ([[32], [64], [128], [256]], [[1.0]]),
    ([32, 64, 128], [[1.0]]),         # not a list of lists
])
def test_wrong_length_lists_raise(sizes, ratios):
    """Sizes/ratios lists that neither broadcast nor match the number of levels raise ValueError."""
    with pytest.raises(ValueError):
        DefaultAnchorGenerator(sizes, ratios, strides=[4, 8, 16])


@pytest.mark.parametrize("offset", [1.0, -0.1, 1.5])
def test_offset_out_of_range_raises(offset):
    """An offset outside [0, 1) raises ValueError."""
    with pytest.raises(ValueError):
        DefaultAnchorGenerator([[32]], [[1.0]], strides=[4], offset=offset)


def test_anchor_dtype_and_device_follow_features():
    """Anchors are float32 on the features' device."""
    gen = DefaultAnchorGenerator([[32]], [[1.0]], strides=[4])
    a = gen(_features([(2, 2)]))[0]
    assert a.dtype == torch.float32 and a.device == torch.device("cpu")
