"""Selecting proposals from dense RPN predictions."""
from typing import List, Tuple

import torch
from torch import Tensor

from ...layers import batched_nms
from ...structures import clip_boxes, nonempty_boxes

__all__ = ["find_top_rpn_proposals"]


def find_top_rpn_proposals(proposals: List[Tensor], pred_objectness_logits: List[Tensor],
                           image_sizes: List[Tuple[int, int]], nms_thresh: float, pre_nms_topk: int,
                           post_nms_topk: int, min_box_size: float,
                           training: bool) -> Tuple[List[Tensor], List[Tensor]]:
    """Top-scoring, clipped, non-overlapping proposals per image.

    proposals: per level Tensor[N, Hi*Wi*A, 4] decoded boxes; pred_objectness_logits:
    per level Tensor[N, Hi*Wi*A]. Per image and level keep the pre_nms_topk best,
    clip to the image, drop boxes not larger than min_box_size, run NMS within
    each level, and keep the post_nms_topk best overall.
    Returns per image (boxes Tensor[Ri, 4], objectness logits Tensor[Ri]), by decreasing score.
    """
    num_images = len(image_sizes)
    device = proposals[0].device if len(proposals) > 0 else torch.device("cpu")

    topk_scores: List[Tensor] = []
    topk_proposals: List[Tensor] = []
    level_ids: List[Tensor] = []
    batch_idx = torch.arange(num_images, device=device)
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        hi_wi_a = logits_i.shape[1]
        num_proposals_i = min(pre_nms_topk, hi_wi_a)
        # A full sort is faster than topk on CPU for these sizes and gives the same order.
        logits_i, idx = logits_i.sort(descending=True, dim=1)
        topk_scores_i = logits_i.narrow(1, 0, num_proposals_i)
        topk_idx = idx.narrow(1, 0, num_proposals_i)
        topk_proposals.append(proposals_i[batch_idx[:, None], topk_idx])
        topk_scores.append(topk_scores_i)
        level_ids.append(torch.full((num_proposals_i,), level_id, dtype=torch.int64, device=device))

    all_scores = torch.cat(topk_scores, dim=1)
    all_proposals = torch.cat(topk_proposals, dim=1)
    all_level_ids = torch.cat(level_ids, dim=0)

    boxes_per_image: List[Tensor] = []
    logits_per_image: List[Tensor] = []
    for n, image_size in enumerate(image_sizes):
        boxes = all_proposals[n]
        scores_per_img = all_scores[n]
        lvl = all_level_ids
        valid_mask = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores_per_img)
        if not bool(valid_mask.all()):
            if training:
                raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
            boxes = boxes[valid_mask]
            scores_per_img = scores_per_img[valid_mask]
            lvl = lvl[valid_mask]
        boxes = clip_boxes(boxes, image_size)

        keep = nonempty_boxes(boxes, threshold=min_box_size)
        if int(keep.sum()) != boxes.shape[0]:
            boxes, scores_per_img, lvl = boxes[keep], scores_per_img[keep], lvl[keep]

        keep = batched_nms(boxes, scores_per_img, lvl, nms_thresh)
        keep = keep[:post_nms_topk]
        boxes_per_image.append(boxes[keep])
        logits_per_image.append(scores_per_img[keep])
    return boxes_per_image, logits_per_image
