"""Fast R-CNN outputs: per-ROI class scores and class-specific box deltas, their losses and inference."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from ...layers import ShapeSpec, batched_nms, cat
from ...structures import Instances, clip_boxes
from ..box_regression import Box2BoxTransform, smooth_l1_loss

__all__ = ["FastRCNNOutputLayers", "fast_rcnn_inference_single_image"]


def fast_rcnn_inference_single_image(boxes: Tensor, scores: Tensor, image_size: Tuple[int, int],
                                     score_thresh: float, nms_thresh: float,
                                     topk_per_image: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Final detections of one image from per-ROI, per-class boxes and probabilities.

    boxes: Tensor[R, K*4] (or [R, 4] class-agnostic); scores: Tensor[R, K+1],
    background last. Keeps (ROI, class) pairs with score > score_thresh, runs
    NMS per class, and keeps the topk_per_image best (all if < 0).
    Returns (boxes Tensor[D, 4], scores Tensor[D], classes Tensor[D] int64,
    index of the source ROI Tensor[D]).
    """
    valid_mask = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid_mask.all()):
        boxes = boxes[valid_mask]
        scores = scores[valid_mask]
    roi_index = torch.nonzero(valid_mask).squeeze(1)

    scores = scores[:, :-1]
    num_bbox_reg_classes = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_bbox_reg_classes, 4)

    filter_mask = scores > score_thresh
    filter_inds = filter_mask.nonzero()
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0], 0]
    else:
        boxes = boxes[filter_mask]
    scores = scores[filter_mask]

    keep = batched_nms(boxes, scores, filter_inds[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]
    return boxes, scores, filter_inds[:, 1], roi_index[filter_inds[:, 0]]


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on ROI features: `cls_score` (K + 1 logits, background last) and
    `bbox_pred` (K * 4 deltas, or 4 when class-agnostic)."""

    def __init__(self, input_shape: ShapeSpec, *, box2box_transform: Box2BoxTransform, num_classes: int,
                 test_score_thresh: float = 0.0, test_nms_thresh: float = 0.5, test_topk_per_image: int = 100,
                 cls_agnostic_bbox_reg: bool = False, smooth_l1_beta: float = 0.0,
                 box_reg_loss_type: str = "smooth_l1", loss_weight: Dict[str, float] = None,
                 use_sigmoid_ce: bool = False):
        super().__init__()
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        if box_reg_loss_type not in ("smooth_l1", "giou"):
            raise ValueError(f"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE must be smooth_l1 or giou, "
                             f"got {box_reg_loss_type!r}")
        self.box_reg_loss_type = box_reg_loss_type
        self.loss_weight = loss_weight if loss_weight is not None else {"loss_cls": 1.0, "loss_box_reg": 1.0}
        self.use_sigmoid_ce = use_sigmoid_ce

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "FastRCNNOutputLayers":
        b = cfg.MODEL.ROI_BOX_HEAD
        return cls(input_shape,
                   box2box_transform=Box2BoxTransform(weights=tuple(b.BBOX_REG_WEIGHTS)),
                   num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                   cls_agnostic_bbox_reg=b.CLS_AGNOSTIC_BBOX_REG,
                   smooth_l1_beta=b.SMOOTH_L1_BETA,
                   test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                   test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                   test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                   box_reg_loss_type=b.BBOX_REG_LOSS_TYPE,
                   loss_weight={"loss_cls": 1.0, "loss_box_reg": b.BBOX_REG_LOSS_WEIGHT},
                   use_sigmoid_ce=b.USE_SIGMOID_CE)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x: Tensor[R, ...] ROI features -> (class logits Tensor[R, K+1], deltas Tensor[R, K*4])."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def predict_probs(self, scores: Tensor) -> Tensor:
        """Class probabilities Tensor[R, K+1] from logits: softmax, or per-class sigmoid."""
        if self.use_sigmoid_ce:
            return scores.sigmoid()
        return F.softmax(scores, dim=-1)

    def inference(self, scores: Tensor, deltas: Tensor, proposal_boxes: List[Tensor],
                  image_sizes: List[Tuple[int, int]]) -> List[Tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Detections per image from the outputs on all images' ROIs (concatenated in order).

        Returns per image (boxes, scores, classes, source ROI index), see
        `fast_rcnn_inference_single_image`.
        """
        num_per_image = [int(b.shape[0]) for b in proposal_boxes]
        if len(proposal_boxes) == 0:
            return []
        boxes = self.box2box_transform.apply_deltas(deltas, torch.cat(proposal_boxes, dim=0))
        probs = self.predict_probs(scores)
        results: List[Tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for boxes_i, probs_i, image_size in zip(boxes.split(num_per_image), probs.split(num_per_image),
                                                image_sizes):
            results.append(fast_rcnn_inference_single_image(boxes_i, probs_i, image_size, self.test_score_thresh,
                                                             self.test_nms_thresh, self.test_topk_per_image))
        return results

    @torch.jit.unused
    def losses(self, predictions: Tuple[Tensor, Tensor], proposals: List[Instances]) -> Dict[str, Tensor]:
        """Classification cross entropy over all sampled ROIs and box regression over the
        foreground ones (normalized by the number of sampled ROIs)."""
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) \
            else torch.empty(0, dtype=torch.int64, device=scores.device)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                           dim=0)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)

        if self.use_sigmoid_ce:
            loss_cls = self._sigmoid_cross_entropy(scores, gt_classes)
        elif gt_classes.numel() == 0:
            loss_cls = scores.sum() * 0.0
        else:
            loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean")
        losses = {"loss_cls": loss_cls,
                  "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes)}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    @torch.jit.unused
    def _sigmoid_cross_entropy(self, logits: Tensor, gt_classes: Tensor) -> Tensor:
        """Per-class binary cross entropy; background is the all-zeros target."""
        if gt_classes.numel() == 0:
            return logits.sum() * 0.0
        n = logits.shape[0]
        target = logits.new_zeros(n, self.num_classes + 1)
        target[torch.arange(n, device=logits.device), gt_classes] = 1
        target = target[:, : self.num_classes]
        loss = F.binary_cross_entropy_with_logits(logits[:, :-1], target, reduction="none")
        return loss.sum() / n

    @torch.jit.unused
    def box_reg_loss(self, proposal_boxes: Tensor, gt_boxes: Tensor, pred_deltas: Tensor,
                     gt_classes: Tensor) -> Tensor:
        """Regression loss of the ground-truth class's deltas on foreground ROIs."""
        box_dim = proposal_boxes.shape[1]
        fg_inds = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes)).squeeze(1)
        if pred_deltas.shape[1] == box_dim:
            fg_pred_deltas = pred_deltas[fg_inds]
        else:
            fg_pred_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[fg_inds, gt_classes[fg_inds]]
        if self.box_reg_loss_type == "smooth_l1":
            gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg_inds], gt_boxes[fg_inds])
            loss = smooth_l1_loss(fg_pred_deltas, gt_deltas, self.smooth_l1_beta, reduction="sum")
        else:
            fg_pred_boxes = self.box2box_transform.apply_deltas(fg_pred_deltas, proposal_boxes[fg_inds])
            loss = generalized_box_iou_loss(fg_pred_boxes, gt_boxes[fg_inds], reduction="sum")
        return loss / max(gt_classes.numel(), 1.0)
