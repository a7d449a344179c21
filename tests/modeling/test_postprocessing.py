"""Behavioural tests for mrcnn_plugin.modeling.postprocessing."""
import math

import pytest
import torch

import torch.nn.functional as F

from mrcnn_plugin.modeling.postprocessing import (_paste_masks_batched,
                                                  detector_postprocess, paste_masks_in_image)


def _expected_box_region(box, h, w):
    """Pixels whose centre (i + 0.5) lies strictly inside the box."""
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    x0, y0, x1, y1 = box
    return (xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)


# ---------------------------------------------------------------- paste_masks_in_image


def test_paste_full_mask_gives_exact_box_pixels():
    """An all-ones 28x28 mask in box (10, 20, 50, 60) fills exactly rows 20..59 and columns 10..49.

    Pixel 10's centre 10.5 is inside the box, so the sample there is > 0.5; pixel 9's
    centre 9.5 is outside, where bilinear sampling against zero padding gives < 0.5.
    """
    masks = torch.ones(1, 28, 28)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    out = paste_masks_in_image(masks, boxes, (80, 70))
    assert out.shape == (1, 80, 70) and out.dtype == torch.bool
    expected = torch.zeros(80, 70, dtype=torch.bool)
    expected[20:60, 10:50] = True
    assert torch.equal(out[0], expected)
    assert torch.equal(expected, _expected_box_region((10, 20, 50, 60), 80, 70))


def test_paste_fractional_box():
    """A full mask in a fractional box covers the pixels whose centres are inside it."""
    box = (3.2, 4.7, 17.9, 9.6)
    out = paste_masks_in_image(torch.ones(1, 14, 14), torch.tensor([box]), (20, 25))
    assert torch.equal(out[0], _expected_box_region(box, 20, 25))


def test_paste_mask_clipped_at_image_border():
    """A box crossing the image border is clipped: only in-image pixels of the box are set."""
    masks = torch.ones(2, 28, 28)
    boxes = torch.tensor([[-10.0, -5.0, 8.0, 6.0],     # crosses top-left
                          [20.0, 25.0, 45.0, 50.0]])   # crosses bottom-right of a 30x40 image
    out = paste_masks_in_image(masks, boxes, (30, 40))
    e0 = torch.zeros(30, 40, dtype=torch.bool)
    e0[0:6, 0:8] = True
    e1 = torch.zeros(30, 40, dtype=torch.bool)
    e1[25:30, 20:40] = True
    assert torch.equal(out[0], e0)
    assert torch.equal(out[1], e1)


def test_paste_half_mask():
    """A mask whose left half is 1 fills the left half of a box 28 pixels wide (pixel-exact)."""
    m = torch.zeros(1, 28, 28)
    m[:, :, :14] = 1.0
    out = paste_masks_in_image(m, torch.tensor([[0.0, 0.0, 28.0, 28.0]]), (28, 28))
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[:, :14] = True  # same grid: pixel j samples mask cell j exactly
    assert torch.equal(out[0], expected)


def test_paste_threshold():
    """A constant 0.3 mask: nothing at threshold 0.5, the whole box at 0.2; uint8 probs when < 0."""
    m = torch.full((1, 28, 28), 0.3)
    box = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    assert not paste_masks_in_image(m, box, (80, 70), threshold=0.5).any()
    # at the box's edge pixels the sample is 0.3 * 0.85 = 0.255 > 0.2 (15% weight on zero padding)
    low = paste_masks_in_image(m, box, (80, 70), threshold=0.2)
    assert torch.equal(low[0], _expected_box_region((10, 20, 50, 60), 80, 70))
    probs = paste_masks_in_image(m, box, (80, 70), threshold=-1)
    assert probs.dtype == torch.uint8
    # interior: 0.3 * 255 = 76.5 -> truncated to 76 (allow float rounding: 76 or 75)
    assert int(probs[0, 40, 30]) in (75, 76)
    assert int(probs[0, 0, 0]) == 0


def test_paste_soft_probabilities_spill_one_pixel_outside_box():
    """uint8 pasting of an all-ones mask: the ring of pixels just outside the box gets 0.15 * 255 = 38.

    Box (10, 20, 50, 60), M = 28. Pixel column 9 (centre 9.5) maps to grid x = -1.025, i.e. mask
    coordinate u = ((x + 1) * 28 - 1) / 2 = -0.85, 15% of the way from the zero padding at -1 to
    cell 0 (value 1) -> 0.15 -> uint8 38. Column 8 (u = -1.55) lies between two padding cells -> 0.
    Same on the right: column 50 (centre 50.5) -> u = 27.85 -> 0.15.
    """
    probs = paste_masks_in_image(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 60.0]]), (80, 70),
                                 threshold=-1)[0]
    assert int(probs[40, 9]) == 38 and int(probs[40, 8]) == 0
    assert int(probs[40, 50]) == 38 and int(probs[40, 51]) == 0
    assert int(probs[19, 30]) == 38 and int(probs[18, 30]) == 0
    assert int(probs[60, 30]) == 38 and int(probs[61, 30]) == 0
    assert int(probs[40, 30]) >= 254  # interior: 1.0 * 255 (truncation may give 254)


def test_paste_zero_detections():
    """Zero masks give a (0, H, W) bool tensor."""
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (15, 17))
    assert out.shape == (0, 15, 17) and out.dtype == torch.bool


def test_paste_one_pixel_box():
    """A full mask in the one-pixel box (5, 7, 6, 8) sets exactly pixel (row 7, col 5)."""
    out = paste_masks_in_image(torch.ones(1, 28, 28), torch.tensor([[5.0, 7.0, 6.0, 8.0]]), (12, 12))
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[7, 5] = True
    assert torch.equal(out[0], expected)


def test_paste_box_outside_image_gives_empty_mask():
    """A box wholly outside the image pastes an all-false mask instead of failing on an empty region."""
    boxes = torch.tensor([[50.0, 2.0, 60.0, 8.0], [2.0, 3.0, 6.0, 9.0]])
    out = paste_masks_in_image(torch.ones(2, 28, 28), boxes, (12, 20))
    assert not out[0].any() and out[1].any()


def test_paste_non_square_raises():
    """Non-square masks are rejected."""
    with pytest.raises(ValueError):
        paste_masks_in_image(torch.ones(1, 28, 14), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), (10, 10))


def _paste_masks_by_region(masks, boxes, img_masks, threshold):
    """Reference: detectron2's way, one mask at a time, grid_sample over the box grown by one
    pixel (an independent implementation of what _paste_masks_batched computes)."""
    img_h, img_w = img_masks.shape[1], img_masks.shape[2]
    for i in range(masks.shape[0]):
        box = boxes[i]
        x0 = max(int(torch.floor(box[0])) - 1, 0)
        y0 = max(int(torch.floor(box[1])) - 1, 0)
        x1 = min(int(torch.ceil(box[2])) + 1, img_w)
        y1 = min(int(torch.ceil(box[3])) + 1, img_h)
        if x1 <= x0 or y1 <= y0:
            continue
        ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - box[1]) / (box[3] - box[1]) * 2 - 1
        xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - box[0]) / (box[2] - box[0]) * 2 - 1
        grid = torch.stack([xs[None, :].expand(len(ys), len(xs)), ys[:, None].expand(len(ys), len(xs))], dim=2)
        pasted = F.grid_sample(masks[i][None, None].float(), grid[None], align_corners=False)[0, 0]
        img_masks[i, y0:y1, x0:x1] = pasted >= threshold if threshold >= 0 else (pasted * 255).to(torch.uint8)


def _paste_with(path, masks, boxes, image_shape, threshold):
    """Runs a pasting function: the reference (filling a fresh output) or the batched path."""
    if path is _paste_masks_batched:
        return _paste_masks_batched(masks, boxes, image_shape, threshold)
    dtype = torch.bool if threshold >= 0 else torch.uint8
    out = torch.zeros((masks.shape[0],) + tuple(image_shape), dtype=dtype)
    path(masks, boxes, out, threshold)
    return out


def _random_masks_and_boxes(n, h, w, seed):
    """n random 28x28 probability maps and boxes, about a third of them crossing the image border."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 28, 28, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    size = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 1.0
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    return masks, boxes


@pytest.mark.parametrize("chunk_pixels", [1 << 21, 1000, 1])
def test_batched_paste_matches_region_paste(chunk_pixels):
    """The batched path (every device) gives the grid_sample reference's masks: bool exactly,
    uint8 within 1.

    Random boxes of 1..0.6 image size, many crossing the border; small budgets (down to
    one row of one mask per write) also check that grouping and strips change nothing.
    """
    masks, boxes = _random_masks_and_boxes(40, 53, 71, seed=0)
    crossing = ((boxes[:, :2] < 0) | (boxes[:, 2:] > torch.tensor([71.0, 53.0]))).any(dim=1)
    assert crossing.sum() >= 5

    for threshold in (0.5, 0.2):
        ref = _paste_with(_paste_masks_by_region, masks, boxes, (53, 71), threshold)
        got = _paste_masks_batched(masks, boxes, (53, 71), threshold, chunk_pixels=chunk_pixels)
        assert ref.any() and torch.equal(got, ref)
    ref = _paste_with(_paste_masks_by_region, masks, boxes, (53, 71), -1).int()
    got = _paste_masks_batched(masks, boxes, (53, 71), -1, chunk_pixels=chunk_pixels).int()
    assert (got - ref).abs().max() <= 1
    # beyond the box grown by one pixel, where the region path writes nothing, the batched path is zero too
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        outside = torch.ones(53, 71, dtype=torch.bool)
        rows = slice(max(math.floor(y0) - 1, 0), max(math.ceil(y1) + 1, 0))
        cols = slice(max(math.floor(x0) - 1, 0), max(math.ceil(x1) + 1, 0))
        outside[rows, cols] = False
        assert not got[i][outside].any()


def test_batched_paste_matches_region_paste_at_photo_size():
    """100 masks of mixed sizes (a few pixels to most of the image) on a 480x640 image, as a
    detector outputs them: the same bool masks as the grid_sample reference."""
    masks, boxes = _random_masks_and_boxes(100, 480, 640, seed=3)
    boxes = boxes * torch.rand(100, 1, generator=torch.Generator().manual_seed(4)) ** 2
    ref = _paste_with(_paste_masks_by_region, masks, boxes, (480, 640), 0.5)
    assert ref.sum() > 10000
    assert torch.equal(paste_masks_in_image(masks, boxes, (480, 640)), ref)


def test_batched_paste_hand_computed_cases():
    """The batched path reproduces the hand-computed cases above: exact box pixels, spill ring of 38."""
    full = _paste_with(_paste_masks_batched, torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
                       (80, 70), 0.5)[0]
    assert torch.equal(full, _expected_box_region((10, 20, 50, 60), 80, 70))
    probs = _paste_with(_paste_masks_batched, torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 60.0]]),
                        (80, 70), -1)[0]
    assert int(probs[40, 9]) == 38 and int(probs[40, 8]) == 0
    assert int(probs[40, 50]) == 38 and int(probs[40, 51]) == 0
    assert int(probs[19, 30]) == 38 and int(probs[18, 30]) == 0
    assert int(probs[40, 30]) >= 254
    clipped = _paste_with(_paste_masks_batched, torch.ones(1, 28, 28), torch.tensor([[-10.0, -5.0, 8.0, 6.0]]),
                          (30, 40), 0.5)[0]
    expected = torch.zeros(30, 40, dtype=torch.bool)
    expected[0:6, 0:8] = True
    assert torch.equal(clipped, expected)
    one = _paste_with(_paste_masks_batched, torch.ones(1, 28, 28), torch.tensor([[5.0, 7.0, 6.0, 8.0]]),
                      (12, 12), 0.5)[0]
    assert one.nonzero().tolist() == [[7, 5]]


def test_paste_masks_in_image_scripts():
    """paste_masks_in_image (with both paths) compiles under TorchScript and matches eager on CPU."""
    scripted = torch.jit.script(paste_masks_in_image)
    masks, boxes = _random_masks_and_boxes(6, 30, 40, seed=1)
    assert torch.equal(scripted(masks, boxes, (30, 40), 0.5), paste_masks_in_image(masks, boxes, (30, 40), 0.5))
    assert scripted(masks[:0], boxes[:0], (30, 40), 0.5).shape == (0, 30, 40)


# ---------------------------------------------------------------- detector_postprocess


def test_detector_postprocess_scales_and_clips_boxes():
    """Boxes scale by (out_w / in_w, out_h / in_h) and are clipped to the output size."""
    result = {"pred_boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 120.0, 90.0]]),
              "scores": torch.tensor([0.9, 0.8]),
              "pred_classes": torch.tensor([1, 2])}
    # input (h=100, w=100) -> output (h=50, w=200): scale_x 2, scale_y 0.5
    out = detector_postprocess(result, (100, 100), 50, 200)
    torch.testing.assert_close(out["pred_boxes"], torch.tensor([[20.0, 10.0, 60.0, 20.0],
                                                                [100.0, 30.0, 200.0, 45.0]]))
    torch.testing.assert_close(out["scores"], result["scores"])
    assert out["pred_classes"].tolist() == [1, 2]
    # the input dict is not modified
    torch.testing.assert_close(result["pred_boxes"][1], torch.tensor([50.0, 60.0, 120.0, 90.0]))


def test_detector_postprocess_drops_empty_with_all_fields():
    """A detection whose box is empty after clipping is dropped with its score, class, mask, keypoints."""
    masks = torch.zeros(3, 1, 28, 28)
    masks[0] = 1.0
    masks[2] = 1.0
    kps = torch.arange(3 * 2 * 3, dtype=torch.float32).view(3, 2, 3)
    result = {"pred_boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0],
                                          [120.0, 10.0, 150.0, 30.0],   # right of the image
                                          [5.0, 5.0, 15.0, 25.0]]),
              "scores": torch.tensor([0.9, 0.8, 0.7]),
              "pred_classes": torch.tensor([3, 4, 5]),
              "pred_masks": masks,
              "pred_keypoints": kps}
    out = detector_postprocess(result, (50, 100), 50, 100)  # same size: scale 1
    assert out["pred_boxes"].shape == (2, 4)
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7]))
    assert out["pred_classes"].tolist() == [3, 5]
    assert out["pred_masks"].shape == (2, 50, 100) and out["pred_masks"].dtype == torch.bool
    e0 = torch.zeros(50, 100, dtype=torch.bool)
    e0[0:10, 0:10] = True
    e1 = torch.zeros(50, 100, dtype=torch.bool)
    e1[5:25, 5:15] = True
    assert torch.equal(out["pred_masks"][0], e0)
    assert torch.equal(out["pred_masks"][1], e1)
    torch.testing.assert_close(out["pred_keypoints"], kps[[0, 2]])


def test_detector_postprocess_keypoints_scaled():
    """Keypoint x scales by scale_x and y by scale_y; the score column is untouched."""
    result = {"pred_boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
              "scores": torch.tensor([0.5]),
              "pred_classes": torch.tensor([0]),
              "pred_keypoints": torch.tensor([[[4.0, 6.0, 0.7], [1.0, 2.0, 3.0]]])}
    out = detector_postprocess(result, (20, 40), 60, 20)  # scale_x 0.5, scale_y 3
    torch.testing.assert_close(out["pred_keypoints"], torch.tensor([[[2.0, 18.0, 0.7], [0.5, 6.0, 3.0]]]))
    torch.testing.assert_close(out["pred_boxes"], torch.tensor([[0.0, 0.0, 5.0, 30.0]]))


def test_detector_postprocess_zero_detections():
    """Zero detections stay zero, with masks of shape (0, H, W)."""
    result = {"pred_boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
              "pred_classes": torch.zeros(0, dtype=torch.int64), "pred_masks": torch.zeros(0, 1, 28, 28)}
    out = detector_postprocess(result, (32, 32), 64, 48)
    assert out["pred_boxes"].shape == (0, 4)
    assert out["pred_masks"].shape == (0, 64, 48)
