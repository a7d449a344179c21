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


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_shape: Tuple[int, int],
                         threshold: float = 0.5) -> Tensor:
    """Full-image masks from per-box mask probabilities.

    masks: Tensor[N, M, M] in [0, 1]; boxes: Tensor[N, 4] XYXY in image pixels;
    image_shape: (height, width). Each mask is bilinearly resampled onto the
    pixels its box covers. Returns Tensor[N, H, W] bool (probability >= threshold),
    or uint8 probabilities * 255 when threshold < 0.
    """
    if masks.shape[-1] != masks.shape[-2]:
        raise ValueError("Only square masks can be pasted")
    img_h, img_w = image_shape
    n = masks.shape[0]
    out_dtype = torch.bool if threshold >= 0 else torch.uint8
    img_masks = torch.zeros((n, img_h, img_w), device=masks.device, dtype=out_dtype)
    for i in range(n):
        pasted, x0, y0, x1, y1 = _paste_one_mask(masks[i], boxes[i], img_h, img_w)
        if threshold >= 0:
            img_masks[i, y0:y1, x0:x1] = pasted >= threshold
        else:
            img_masks[i, y0:y1, x0:x1] = (pasted * 255).to(torch.uint8)
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
