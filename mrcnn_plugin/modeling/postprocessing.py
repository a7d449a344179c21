"""From network outputs at the resized input size to results at the original image size:
rescaled boxes, full-image binary masks, keypoints in image pixels."""
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from ..layers.roi_align import size_groups
from ..structures import clip_boxes, nonempty_boxes

__all__ = ["detector_postprocess", "paste_masks_in_image"]


def _axis_weights(lo: Tensor, hi: Tensor, pix: Tensor, mask_size: int) -> Tensor:
    """Bilinear weights along one image axis for N boxes spanning [lo, hi] on it.

    lo, hi: Tensor[N], the box sides in pixels; pix: Tensor[N, L], the pixel
    indices (as floats) sampled for each box. Returns Tensor[N, L, mask_size]:
    the weight of mask cell m in the sample at pixel pix[n, l], computed as
    grid_sample does (align_corners=False, zero padding; detectron2 pastes with
    grid_sample). Only pixels of the box's region (`_paste_regions`) are used.
    """
    grid = (pix + 0.5 - lo[:, None]) / (hi - lo)[:, None] * 2 - 1
    u = ((grid + 1) * mask_size - 1) / 2
    u0 = u.floor()
    # Columns 0 and mask_size + 1 collect the taps that land on the zero padding.
    left = (u0.long() + 1).clamp(0, mask_size + 1)
    right = (u0.long() + 2).clamp(0, mask_size + 1)
    weights = torch.zeros(lo.shape[0], pix.shape[1], mask_size + 2, device=lo.device)
    weights.scatter_(2, left[:, :, None], (u0 + 1 - u)[:, :, None])
    weights.scatter_add_(2, right[:, :, None], (u - u0)[:, :, None])
    return weights[:, :, 1:mask_size + 1]


def _paste_regions(boxes: Tensor, img_h: int, img_w: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pixels each box's mask is pasted on: the box grown by one pixel, clipped to the image.

    boxes: Tensor[N, 4] XYXY pixels -> (x0, y0, x1, y1), each Tensor[N] int64;
    the region is rows y0..y1 - 1 and columns x0..x1 - 1, empty when y1 <= y0 or
    x1 <= x0 (a box wholly outside the image).
    """
    x0 = (boxes[:, 0].floor() - 1).clamp(min=0).long()
    y0 = (boxes[:, 1].floor() - 1).clamp(min=0).long()
    x1 = (boxes[:, 2].ceil() + 1).clamp(max=float(img_w)).long()
    y1 = (boxes[:, 3].ceil() + 1).clamp(max=float(img_h)).long()
    return x0, y0, x1, y1


def _paste_masks_batched(masks: Tensor, boxes: Tensor, image_shape: Tuple[int, int], threshold: float,
                         chunk_pixels: int = 1 << 21) -> Tensor:
    """Pastes masks: Tensor[N, M, M] (boxes: Tensor[N, 4] float) into Tensor[N, H, W] images,
    bool (>= threshold) or uint8 * 255 (threshold < 0), computing only each box's region.

    Bilinear resampling is separable, so a pasted mask is Wy @ mask @ Wx^T with
    the weights of _axis_weights over the region's rows and columns. Wy @ mask
    is cheap and done for all masks at once. The second product is done in
    groups of masks of similar region size (layers.roi_align's grouping, sides
    within 2x, about chunk_pixels values per group), padded to the group's
    largest region, and written with one indexed write per group (padding goes
    to a scratch element): a loop over a few groups, not over the masks, and
    no work on the pixels far from a box.
    """
    n, mask_size = masks.shape[0], masks.shape[-1]
    img_h, img_w = image_shape
    scratch = n * img_h * img_w
    flat = torch.zeros(scratch + 1, dtype=torch.bool if threshold >= 0 else torch.uint8, device=masks.device)
    img_masks = flat[:scratch].view(n, img_h, img_w)
    if n == 0:
        return img_masks
    x0, y0, x1, y1 = _paste_regions(boxes, img_h, img_w)
    span_y = (y1 - y0).clamp(min=0)
    span_x = (x1 - x0).clamp(min=0)
    h_max, w_max = int(span_y.max()), int(span_x.max())
    if h_max == 0 or w_max == 0:  # every box lies wholly outside the image
        return img_masks
    rows = y0[:, None] + torch.arange(h_max, device=boxes.device)                                  # [N, h_max]
    cols = x0[:, None] + torch.arange(w_max, device=boxes.device)                                  # [N, w_max]
    masks_y = torch.bmm(_axis_weights(boxes[:, 1], boxes[:, 3], rows.to(boxes.dtype), mask_size),
                        masks.float())                                                             # [N, h_max, M]
    wx = _axis_weights(boxes[:, 0], boxes[:, 2], cols.to(boxes.dtype), mask_size).transpose(1, 2)  # [N, M, w_max]
    # Flat index of each region pixel in img_masks; a padding row or column adds `scratch`
    # (one past the end), so that after clamping it lands on the scratch element.
    image_index = torch.arange(n, device=boxes.device)[:, None] * img_h
    row_offset = torch.where(rows < y1[:, None], (image_index + rows) * img_w, scratch)
    col_offset = torch.where(cols < x1[:, None], cols, scratch)
    for members, hg, wg in size_groups(span_y, span_x, 1, chunk_pixels, 2.0):
        if hg == 0 or wg == 0:  # boxes wholly outside the image paste nothing
            continue
        group_masks_y = masks_y.index_select(0, members)
        group_wx = wx.index_select(0, members)[:, :, :wg]
        group_rows = row_offset.index_select(0, members)
        group_cols = col_offset.index_select(0, members)[:, None, :wg]
        # A region larger than chunk_pixels (a huge image) is done in strips of rows.
        strip = max(1, chunk_pixels // (int(members.shape[0]) * wg))
        for r0 in range(0, hg, strip):
            r1 = min(r0 + strip, hg)
            pasted = torch.bmm(group_masks_y[:, r0:r1], group_wx)
            index = (group_rows[:, r0:r1, None] + group_cols).clamp(max=scratch)
            if threshold >= 0:
                values = pasted >= threshold
            else:
                values = (pasted * 255).to(torch.uint8)
            flat.index_put_((index.reshape(-1),), values.reshape(-1))
    return img_masks


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_shape: Tuple[int, int],
                         threshold: float = 0.5) -> Tensor:
    """Full-image masks from per-box mask probabilities.

    masks: Tensor[N, M, M] in [0, 1]; boxes: Tensor[N, 4] XYXY in image pixels;
    image_shape: (height, width). Each mask is bilinearly resampled onto the
    pixels its box covers (grown by one pixel), with the weights of detectron2's
    grid_sample paste. Returns Tensor[N, H, W] bool (probability >= threshold),
    or uint8 probabilities * 255 when threshold < 0. One batched path
    (`_paste_masks_batched`) serves every device.
    """
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError("Only square masks can be pasted")
    return _paste_masks_batched(masks, boxes.float(), image_shape, threshold)


def detector_postprocess(result: Dict[str, Tensor], input_size: Tuple[int, int], output_height: int,
                         output_width: int, mask_threshold: float = 0.5) -> Dict[str, Tensor]:
    """Rescales one image's detections from the network input size to (output_height, output_width).

    result: pred_boxes [D, 4], scores, pred_classes, optional pred_masks
    [D, 1, M, M] probabilities and pred_keypoints [D, K, 3]; input_size: the
    (height, width) of the resized image the network saw. Boxes are scaled,
    clipped, and detections whose box became empty are dropped; masks become
    full-image bool Tensor[D, H, W]; keypoint x, y are scaled.
    """
    scale_x = output_width / input_size[1]
    scale_y = output_height / input_size[0]
    boxes = result["pred_boxes"].clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, (output_height, output_width))
    keep = nonempty_boxes(boxes)

    out: Dict[str, Tensor] = {}
    for name, value in result.items():
        out[name] = value[keep]
    out["pred_boxes"] = boxes[keep]
    if "pred_masks" in out:
        out["pred_masks"] = paste_masks_in_image(out["pred_masks"][:, 0], out["pred_boxes"],
                                                 (output_height, output_width), mask_threshold)
    if "pred_keypoints" in out:
        keypoints = out["pred_keypoints"].clone()
        keypoints[:, :, 0] *= scale_x
        keypoints[:, :, 1] *= scale_y
        out["pred_keypoints"] = keypoints
    return out
