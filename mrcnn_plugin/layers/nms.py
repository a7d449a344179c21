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


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix Tensor[A, B] of a: Tensor[A, 4] and b: Tensor[B, 4] (XYXY), torchvision's formula
    (no +1 on widths)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _suppression(a: Tensor, b: Tensor, group_a: Tensor, group_b: Tensor, iou_threshold: float) -> Tensor:
    """Tensor[A, B] bool: box a_i would remove box b_j (same group, IoU above the threshold)."""
    return (_iou(a, b) > iou_threshold) & (group_a[:, None] == group_b[None, :])


def _greedy_keep_sorted(boxes: Tensor, groups: Tensor, iou_threshold: float, block: int = 256) -> Tensor:
    """Greedy NMS over boxes sorted by group, then by decreasing score: keep Tensor[N] bool.

    boxes: Tensor[N, 4]; groups: Tensor[N] int64, non-decreasing (boxes of different groups
    never suppress each other). Greedy NMS keeps box j iff no kept box before it in its
    group suppresses it. Blocks of `block` boxes are settled in order: first the boxes
    of the same groups kept in earlier blocks remove what they overlap (one [kept, block]
    IoU matrix), then the block's survivors are visited in order, each one still kept
    removing the later boxes it overlaps (its row of the block's suppression matrix).
    Memory stays O(N * block).
    """
    n = boxes.shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    for start in range(0, n, block):
        end = min(start + block, n)
        cur, cur_groups = boxes[start:end], groups[start:end]
        alive = torch.ones(end - start, dtype=torch.bool, device=boxes.device)
        # Sorted by group, the earlier boxes of this block's groups start at the first of its group.
        first = int(torch.searchsorted(groups[:start], cur_groups[:1]).item()) if start > 0 else 0
        earlier = torch.nonzero(keep[first:start]).squeeze(1) + first
        if earlier.shape[0] > 0:
            alive = ~_suppression(boxes[earlier], cur, groups[earlier], cur_groups, iou_threshold).any(dim=0)
        within = _suppression(cur, cur, cur_groups, cur_groups, iou_threshold).triu(diagonal=1)
        block_keep = alive.clone()
        survivors: List[int] = torch.nonzero(alive).squeeze(1).tolist()
        for i in survivors:
            if bool(block_keep[i]):
                block_keep &= ~within[i]
        keep[start:end] = block_keep
    return keep


def batched_nms_aten(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group of idxs, from ATen operators; see `batched_nms`.

    All groups go through one blocked pass ordered by (group, score), where a block only
    looks back at the kept boxes of its own groups. Ties in score keep input order.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    by_score = torch.sort(scores, stable=True, dim=0, descending=True)[1]
    order = by_score[torch.sort(idxs[by_score], stable=True)[1]]
    keep = order[_greedy_keep_sorted(boxes[order].float(), idxs[order], iou_threshold)]
    # Input order, then a stable sort by score: ties come out in input order.
    keep = torch.sort(keep)[0]
    return keep[torch.sort(scores[keep], stable=True, dim=0, descending=True)[1]]


def nms_aten(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """boxes: Tensor[N, 4] XYXY; scores: Tensor[N] -> kept indices Tensor[K], by decreasing score.

    Equal to torchvision.ops.nms, ties in score kept in input order.
    """
    return batched_nms_aten(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_threshold)


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
