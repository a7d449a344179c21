"""Non-maximum suppression.

Eager, torchvision's kernels run. Scripted, `batched_nms_aten` runs instead: the
same greedy algorithm from ATen operators only, so scripted and exported models
load in plain LibTorch.
"""
from typing import List

import torch
from torch import Tensor
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms

__all__ = ["nms", "batched_nms", "nms_aten", "batched_nms_aten"]


def _greedy_keep(suppresses: Tensor) -> Tensor:
    """Greedy NMS on a suppression relation over boxes sorted by decreasing score.

    suppresses: Tensor[N, N] bool, [i, j] True when box i (i < j) would remove box j.
    Returns keep: Tensor[N] bool. Greedy NMS keeps j iff no kept i < j suppresses it;
    that recursive definition has one solution, found here as the fixed point of
    "keep j unless a currently kept box suppresses it", starting from keeping all.
    Each round settles at least the next box in order, and in practice a handful
    of rounds (the length of the longest suppression chain) suffice.
    """
    n = suppresses.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppresses.device)
    for _ in range(n):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if bool(torch.equal(new_keep, keep)):
            break
        keep = new_keep
    return keep


def _iou_sorted(boxes: Tensor) -> Tensor:
    """IoU matrix Tensor[N, N] with torchvision's formula (no +1 on widths)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lt = torch.max(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area[:, None] + area[None, :] - inter)


def nms_aten(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """boxes: Tensor[N, 4] XYXY; scores: Tensor[N] -> kept indices Tensor[K], by decreasing score.

    Equal to torchvision.ops.nms, ties in score kept in input order.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, stable=True, dim=0, descending=True)[1]
    sorted_boxes = boxes[order].float()
    n = sorted_boxes.shape[0]
    later = torch.ones((n, n), dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    keep = _greedy_keep((_iou_sorted(sorted_boxes) > iou_threshold) & later)
    return order[keep]


def batched_nms_aten(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group of idxs, from ATen operators; see `batched_nms`."""
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    kept: List[Tensor] = []
    groups: List[int] = torch.unique(idxs).tolist()
    for group in groups:
        members = torch.nonzero(idxs == group).squeeze(1)
        kept.append(members[nms_aten(boxes[members], scores[members], iou_threshold)])
    # Input order, then a stable sort by score: ties come out in input order.
    keep = torch.sort(torch.cat(kept))[0]
    return keep[torch.sort(scores[keep], stable=True, dim=0, descending=True)[1]]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """boxes: Tensor[N, 4] XYXY; scores: Tensor[N] -> kept indices Tensor[K], by decreasing score."""
    if torch.jit.is_scripting():
        return nms_aten(boxes, scores, iou_threshold)
    return tv_nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently within each group of `idxs` (class or pyramid level).

    boxes: Tensor[N, 4] XYXY; scores: Tensor[N]; idxs: Tensor[N] int64
    -> kept indices Tensor[K], by decreasing score.
    """
    if torch.jit.is_scripting():
        return batched_nms_aten(boxes.float(), scores, idxs, iou_threshold)
    return tv_batched_nms(boxes.float(), scores, idxs, iou_threshold)
