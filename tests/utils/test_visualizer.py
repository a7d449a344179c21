"""draw_instances and save_image: what is drawn where, what is left alone, and determinism."""
import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_plugin.utils import draw_instances, instance_color, save_image, skeleton_from_names

H, W = 160, 240
GREY = 120


def _grey(value: int = GREY, h: int = H, w: int = W) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _mask(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _color255(index: int) -> np.ndarray:
    return np.array(instance_color(index)) * 255.0


def test_mask_pixels_move_toward_instance_colour():
    """Inside a mask (away from its outline and the box) a pixel becomes the even blend of the
    original and the instance colour, i.e. much closer to the instance colour than before."""
    image = _grey()
    mask = _mask(60, 120, 80, 180)
    out = draw_instances(image, [[80, 60, 180, 120]], [0.9], [0], ["thing"], masks=mask[None])
    probe = out[95, 130].astype(float)
    expected = np.round(0.5 * GREY + 0.5 * _color255(0))
    np.testing.assert_allclose(probe, expected, atol=1)
    before = np.abs(image[95, 130] - _color255(0)).sum()
    after = np.abs(probe - _color255(0)).sum()
    assert after < 0.6 * before


def test_pixels_far_outside_are_unchanged_exactly():
    """Away from the instance, its outline and its label the picture is the input, bit for bit
    (1:1 canvas, no resampling), here checked on a noise image where any blur would show."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    mask = _mask(60, 120, 80, 180)
    out = draw_instances(image, [[80, 60, 180, 120]], [0.9], [0], ["thing"], masks=mask[None])
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[135:, :], image[135:, :])  # below the box
    np.testing.assert_array_equal(out[:, 200:], image[:, 200:])  # right of the box and of the label
    np.testing.assert_array_equal(out[:, :65], image[:, :65])    # left of the box


@pytest.mark.parametrize("size", [(97, 131), (480, 640), (427, 640), (333, 501)])
def test_output_has_the_input_size(size):
    """The rendered picture has exactly the input's height and width (no off-by-one from figure sizing)."""
    h, w = size
    out = draw_instances(_grey(h=h, w=w), [[10, 10, 50, 40]], [0.8], [0], ["thing"])
    assert out.shape == (h, w, 3)
    assert out[h - 1, w - 1].tolist() == [GREY] * 3


def test_label_has_dark_background_near_box_top_left():
    """The label "name 97%" sits on a dark box just above the box's top-left corner, with light text."""
    image = _grey(170)
    out = draw_instances(image, [[60, 70, 200, 140]], [0.97], [1], ["cat", "dog"])
    region = out[70 - 14:70, 60:100].astype(int)  # the band just above the box's top-left
    dark = (region.max(axis=2) < 60).mean()
    light = (region.min(axis=2) > 180).mean()
    assert dark > 0.4, f"only {dark:.0%} dark pixels where the label's background should be"
    assert light > 0.02, "no light text pixels on the label"
    # Nothing dark on the other side of the image, far from the label.
    assert (out[:40, 210:].max(axis=2) < 60).sum() == 0


def test_label_goes_inside_box_at_top_edge():
    """A box touching the image's top edge gets its label inside, below its top-left corner."""
    out = draw_instances(_grey(170), [[60, 0, 200, 100]], [0.97], [0], ["cat"])
    region = out[2:16, 62:110]
    assert (region.max(axis=2) < 60).mean() > 0.4


def test_keypoints_drawn_at_given_coordinates():
    """Visible keypoints appear as dots (the instance colour lightened halfway to white) at their
    (x, y); a keypoint with a score at or under the threshold is not drawn; the skeleton joins the
    two visible ones and not the hidden one."""
    image = _grey()
    keypoints = np.array([[[50.5, 40.5, 1.0], [150.5, 40.5, 0.9], [100.5, 130.5, 0.01]]])
    out = draw_instances(image, [[20, 20, 220, 150]], [0.9], [0], ["person"], keypoints=keypoints,
                         skeleton=[(0, 1), (1, 2)])
    color = 0.5 * (_color255(0) + 255.0)
    for x, y in [(50, 40), (150, 40)]:
        assert np.abs(out[y, x] - color).sum() < 30, f"no dot at ({x}, {y}): {out[y, x]}"
        assert out[y + 8, x].tolist() == [GREY] * 3  # the dot is small and centred on (x, y)
    assert out[130, 100].tolist() == [GREY] * 3  # below the keypoint threshold
    # The middle of the skeleton line (0, 1): antialiased, so near the colour rather than on it.
    assert np.abs(out[40, 100] - color).sum() < 0.4 * np.abs(GREY - color).sum()
    assert out[85, 125].tolist() == [GREY] * 3  # no line (1, 2) to the invisible keypoint


def test_score_threshold_hides_low_score_instances():
    """An instance under score_threshold leaves its region untouched; lowering the threshold draws it,
    in the colour of its index (colours do not depend on what is hidden)."""
    image = _grey()
    masks = np.stack([_mask(20, 60, 20, 80), _mask(90, 140, 140, 220)])
    boxes = [[20, 20, 80, 60], [140, 90, 220, 140]]
    out = draw_instances(image, boxes, [0.9, 0.3], [0, 0], ["thing"], masks=masks, score_threshold=0.5)
    np.testing.assert_array_equal(out[80:, 120:], image[80:, 120:])
    out_all = draw_instances(image, boxes, [0.9, 0.3], [0, 0], ["thing"], masks=masks, score_threshold=0.2)
    expected = np.round(0.5 * GREY + 0.5 * _color255(1))
    np.testing.assert_allclose(out_all[120, 180].astype(float), expected, atol=1)


def test_deterministic_tensors_accepted_input_untouched():
    """Torch tensors work like numpy arrays, the same call gives the same pixels, the input is not modified."""
    image = _grey()
    snapshot = image.copy()
    masks = torch.from_numpy(_mask(30, 90, 40, 120))[None]
    args = (torch.tensor([[40.0, 30.0, 120.0, 90.0]]), torch.tensor([0.8]), torch.tensor([3]), ["a", "b"])
    first = draw_instances(image, *args, masks=masks)
    second = draw_instances(image, *args, masks=masks.numpy())
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(image, snapshot)


def test_nothing_above_threshold_returns_a_copy():
    """With no instance to draw the result equals the input (and is a separate array)."""
    image = _grey()
    out = draw_instances(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [])
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_bad_shapes_are_errors():
    """A mask that is not full-image, or mismatched counts, is a clear ValueError."""
    with pytest.raises(ValueError, match="masks must be"):
        draw_instances(_grey(), [[0, 0, 10, 10]], [0.9], [0], ["a"], masks=np.zeros((1, 28, 28), bool))
    with pytest.raises(ValueError, match="2 scores"):
        draw_instances(_grey(), [[0, 0, 10, 10]], [0.9, 0.8], [0], ["a"])


def test_skeleton_from_names():
    """Name pairs (detectron2 rules with a colour, or exported [a, b] pairs) become index pairs."""
    names = ["nose", "left_eye", "right_eye"]
    assert skeleton_from_names(names, [("nose", "left_eye", (255, 0, 0)), ["nose", "right_eye"]]) == [(0, 1), (0, 2)]
    with pytest.raises(ValueError, match="left_ear"):
        skeleton_from_names(names, [("nose", "left_ear")])


def test_save_image_writes_png(tmp_path):
    """save_image writes a PNG with the array's exact pixels (creating folders) and leaves no temp file."""
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(31, 47, 3), dtype=np.uint8)
    path = save_image(array, tmp_path / "sub" / "pic.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), array)
    assert [p.name for p in path.parent.iterdir()] == ["pic.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_image(array.astype(np.float32), tmp_path / "bad.png")
