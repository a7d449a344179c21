"""From network outputs at the resized input size to results at the original image size:
rescaled boxes, full-image binary masks, keypoints in image pixels."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..structures import clip_boxes, nonempty_boxes

__all__ = ["detector_postprocess", "paste_masks_in_image"]


def _paste_one_mask(mask: Tensor, box: Tensor, img_h: int, img_w: int) -> Tuple[Tensor, int, int, int, int]:
    """Resamples one mask: Tensor[M, M] into its box: Tensor[4], over the box's pixel region only.

    Returns (probabilities Tensor[y1 - y0, x1 - x0], x0, y0, x1, y1), the region
    being the box grown by one pixel and clipped to the image.
    """
    x0_int = max(int(torch.floor(box[0])) - 1, 0)
    y0_int = max(int(torch.floor(box[1])) - 1, 0)
    x1_int = min(int(torch.ceil(box[2])) + 1, img_w)
    y1_int = min(int(torch.ceil(box[3])) + 1, img_h)
    if x1_int <= x0_int or y1_int <= y0_int:  # the box lies wholly outside the image
        return torch.zeros((0, 0), device=mask.device), x0_int, y0_int, x0_int, y0_int
    # Pixel centres of the region in the box's normalized [-1, 1] coordinates.
    img_y = torch.arange(y0_int, y1_int, device=mask.device, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=mask.device, dtype=torch.float32) + 0.5
    img_y = (img_y - box[1]) / (box[3] - box[1]) * 2 - 1
    img_x = (img_x - box[0]) / (box[2] - box[0]) * 2 - 1
    gx = img_x[None, :].expand(img_y.size(0), img_x.size(0))
    gy = img_y[:, None].expand(img_y.size(0), img_x.size(0))
    grid = torch.stack([gx, gy], dim=2)[None]
    pasted = F.grid_sample(mask[None, None].to(grid.dtype), grid, align_corners=False)
    return pasted[0, 0], x0_int, y0_int, x1_int, y1_int


def _axis_weights(lo: Tensor, hi: Tensor, length: int, mask_size: int) -> Tensor:
    """Bilinear weights along one image axis for N boxes spanning [lo, hi] on it.

    lo, hi: Tensor[N], the box sides in pixels. Returns Tensor[N, length, mask_size]:
    the weight of mask cell m in the sample at pixel p, computed as grid_sample does
    (align_corners=False, zero padding), and zero outside the pixels [floor(lo) - 1,
    ceil(hi) + 1) that the per-box region path resamples.
    """
    pix = torch.arange(length, device=lo.device, dtype=torch.float32)
    grid = (pix[None, :] + 0.5 - lo[:, None]) / (hi - lo)[:, None] * 2 - 1
    u = ((grid + 1) * mask_size - 1) / 2
    u0 = u.floor()
    window = (pix[None, :] >= lo.floor()[:, None] - 1) & (pix[None, :] < hi.ceil()[:, None] + 1)
    # Columns 0 and mask_size + 1 collect the taps that land on the zero padding.
    left = (u0.long() + 1).clamp(0, mask_size + 1)
    right = (u0.long() + 2).clamp(0, mask_size + 1)
    weights = torch.zeros(lo.shape[0], length, mask_size + 2, device=lo.device)
    weights.scatter_(2, left[:, :, None], ((u0 + 1 - u) * window)[:, :, None])
    weights.scatter_add_(2, right[:, :, None], ((u - u0) * window)[:, :, None])
    return weights[:, :, 1:mask_size + 1]


def _paste_masks_batched(masks: Tensor, boxes: Tensor, img_masks: Tensor, threshold: float,
                         chunk_pixels: int = 1 << 21) -> None:
    """Pastes all masks: Tensor[N, M, M] into img_masks: Tensor[N, H, W] without a loop over masks.

    Bilinear resampling is separable, so each pasted mask is Wy @ mask @ Wx^T with
    the weights of _axis_weights; chunks of about chunk_pixels output values keep
    the float intermediate small.
    """
    n, img_h, img_w = img_masks.shape
    wy = _axis_weights(boxes[:, 1], boxes[:, 3], img_h, masks.shape[-1])
    wx = _axis_weights(boxes[:, 0], boxes[:, 2], img_w, masks.shape[-1]).transpose(1, 2)
    rows = torch.bmm(wy, masks.float())
    chunk = max(1, chunk_pixels // max(img_h * img_w, 1))
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        pasted = torch.bmm(rows[start:end], wx[start:end])
        if threshold >= 0:
            img_masks[start:end] = pasted >= threshold
        else:
            img_masks[start:end] = (pasted * 255).to(torch.uint8)


def _paste_masks_by_region(masks: Tensor, boxes: Tensor, img_masks: Tensor, threshold: float) -> None:
    """Pastes masks: Tensor[N, M, M] into img_masks: Tensor[N, H, W] one box region at a time."""
    img_h, img_w = img_masks.shape[1], img_masks.shape[2]
    for i in range(masks.shape[0]):
        pasted, x0, y0, x1, y1 = _paste_one_mask(masks[i], boxes[i], img_h, img_w)
        if threshold >= 0:
            img_masks[i, y0:y1, x0:x1] = pasted >= threshold
        else:
            img_masks[i, y0:y1, x0:x1] = (pasted * 255).to(torch.uint8)


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_shape: Tuple[int, int],
                         threshold: float = 0.5) -> Tensor:
    """Full-image masks from per-box mask probabilities.

    masks: Tensor[N, M, M] in [0, 1]; boxes: Tensor[N, 4] XYXY in image pixels;
    image_shape: (height, width). Each mask is bilinearly resampled onto the
    pixels its box covers (grown by one pixel). Returns Tensor[N, H, W] bool
    (probability >= threshold), or uint8 probabilities * 255 when threshold < 0.

    On CPU a loop over box regions is faster: it touches only the pixels near each
    box, while the batched path computes every pixel of every mask. On an
    accelerator the batched path avoids a kernel launch and a host sync per mask.
    Both give the same masks up to float rounding.
    """
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError("Only square masks can be pasted")
    img_h, img_w = image_shape
    out_dtype = torch.bool if threshold >= 0 else torch.uint8
    img_masks = torch.zeros((masks.shape[0], img_h, img_w), device=masks.device, dtype=out_dtype)
    if masks.shape[0] == 0:
        return img_masks
    if masks.device.type == "cpu":
        _paste_masks_by_region(masks, boxes, img_masks, threshold)
    else:
        _paste_masks_batched(masks, boxes.float(), img_masks, threshold)
    return img_masks


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
