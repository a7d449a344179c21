"""Region Proposal Network (Ren et al. 2015): objectness and box deltas for every anchor.

Inference (`forward`, scriptable): features -> per-image proposal boxes and
objectness logits. Training (`forward_train`, eager only): also labels
anchors against the ground truth and returns the RPN losses.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from ...layers import Conv2d, ShapeSpec, cat
from ...registry import PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY, build_from_registry
from ...structures import Instances, pairwise_iou
from ..anchor_generator import build_anchor_generator
from ..box_regression import Box2BoxTransform, smooth_l1_loss
from ..matcher import Matcher
from ..sampling import subsample_labels
from .proposal_utils import find_top_rpn_proposals

__all__ = ["StandardRPNHead", "RPN", "build_rpn_head"]


@RPN_HEAD_REGISTRY.register()
class StandardRPNHead(nn.Module):
    """Shared 3x3 convolution(s) + ReLU, then 1x1 convolutions for A objectness logits and A*4 deltas.

    The same weights run on every pyramid level.
    """

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: List[int] = (-1,)):
        super().__init__()
        cur_channels = in_channels
        if len(conv_dims) == 1:
            out_channels = cur_channels if conv_dims[0] == -1 else conv_dims[0]
            self.conv = self._conv(cur_channels, out_channels)
            cur_channels = out_channels
        else:
            self.conv = nn.Sequential()
            for k, conv_dim in enumerate(conv_dims):
                out_channels = cur_channels if conv_dim == -1 else conv_dim
                if out_channels <= 0:
                    raise ValueError(f"MODEL.RPN.CONV_DIMS must be positive or -1, got {conv_dim}")
                self.conv.add_module(f"conv{k}", self._conv(cur_channels, out_channels))
                cur_channels = out_channels
        self.objectness_logits = nn.Conv2d(cur_channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(cur_channels, num_anchors * box_dim, kernel_size=1, stride=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    @staticmethod
    def _conv(in_channels: int, out_channels: int) -> Conv2d:
        return Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation=nn.ReLU(inplace=True))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]) -> "StandardRPNHead":
        in_channels = [s.channels for s in input_shape]
        if len(set(in_channels)) != 1:
            raise ValueError(f"Every RPN input level needs the same channels, got {in_channels}")
        anchor_generator = build_anchor_generator(cfg, input_shape)
        num_anchors = anchor_generator.num_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(f"Every level needs the same number of anchors, got {num_anchors}")
        return cls(in_channels[0], num_anchors[0], 4, list(cfg.MODEL.RPN.CONV_DIMS))

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """features: per level Tensor[N, C, Hi, Wi].

        Returns (objectness logits per level Tensor[N, A, Hi, Wi],
        anchor deltas per level Tensor[N, A*4, Hi, Wi]).
        """
        pred_objectness_logits: List[Tensor] = []
        pred_anchor_deltas: List[Tensor] = []
        for x in features:
            t = self.conv(x)
            pred_objectness_logits.append(self.objectness_logits(t))
            pred_anchor_deltas.append(self.anchor_deltas(t))
        return pred_objectness_logits, pred_anchor_deltas


def build_rpn_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    """Builds MODEL.RPN.HEAD_NAME."""
    return build_from_registry(RPN_HEAD_REGISTRY, cfg.MODEL.RPN.HEAD_NAME, cfg, input_shape)


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region Proposal Network over the feature maps named in_features."""

    def __init__(self, *, in_features: List[str], head: nn.Module, anchor_generator: nn.Module,
                 anchor_matcher: Matcher, box2box_transform: Box2BoxTransform, batch_size_per_image: int,
                 positive_fraction: float, pre_nms_topk: Tuple[int, int], post_nms_topk: Tuple[int, int],
                 nms_thresh: float = 0.7, min_box_size: float = 0.0, anchor_boundary_thresh: float = -1.0,
                 loss_weight: Optional[Dict[str, float]] = None, box_reg_loss_type: str = "smooth_l1",
                 smooth_l1_beta: float = 0.0):
        super().__init__()
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        # Arguments are (train, test) pairs.
        self.pre_nms_topk_train, self.pre_nms_topk_test = int(pre_nms_topk[0]), int(pre_nms_topk[1])
        self.post_nms_topk_train, self.post_nms_topk_test = int(post_nms_topk[0]), int(post_nms_topk[1])
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        self.loss_weight = loss_weight if loss_weight is not None else {"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0}
        if box_reg_loss_type not in ("smooth_l1", "giou"):
            raise ValueError(f"MODEL.RPN.BBOX_REG_LOSS_TYPE must be smooth_l1 or giou, got {box_reg_loss_type!r}")
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "RPN":
        r = cfg.MODEL.RPN
        in_features = list(r.IN_FEATURES)
        for f in in_features:
            if f not in input_shape:
                raise ValueError(f"MODEL.RPN.IN_FEATURES names {f!r}, which the backbone does not "
                                 f"produce ({list(input_shape)})")
        shapes = [input_shape[f] for f in in_features]
        return cls(
            in_features=in_features,
            head=build_rpn_head(cfg, shapes),
            anchor_generator=build_anchor_generator(cfg, shapes),
            anchor_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=True),
            box2box_transform=Box2BoxTransform(weights=tuple(r.BBOX_REG_WEIGHTS)),
            batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
            positive_fraction=r.POSITIVE_FRACTION,
            pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
            post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST),
            nms_thresh=r.NMS_THRESH,
            min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            anchor_boundary_thresh=r.BOUNDARY_THRESH,
            loss_weight={"loss_rpn_cls": r.LOSS_WEIGHT, "loss_rpn_loc": r.BBOX_REG_LOSS_WEIGHT * r.LOSS_WEIGHT},
            box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
            smooth_l1_beta=r.SMOOTH_L1_BETA,
        )

    def _head_outputs(self, features: Dict[str, Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Anchors per level Tensor[Hi*Wi*A, 4], logits per level Tensor[N, Hi*Wi*A],
        deltas per level Tensor[N, Hi*Wi*A, 4], all in (y, x, anchor) order."""
        feature_list = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feature_list)
        logits, deltas = self.rpn_head(feature_list)
        logits = [score.permute(0, 2, 3, 1).flatten(1) for score in logits]
        deltas = [d.view(d.shape[0], -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for d in deltas]
        return anchors, logits, deltas

    def _decode_proposals(self, anchors: List[Tensor], pred_anchor_deltas: List[Tensor]) -> List[Tensor]:
        """Boxes per level Tensor[N, Hi*Wi*A, 4] from anchors and predicted deltas."""
        num_images = pred_anchor_deltas[0].shape[0]
        proposals: List[Tensor] = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas):
            b = anchors_i.size(1)
            deltas_i = deltas_i.reshape(-1, b)
            anchors_i = anchors_i.unsqueeze(0).expand(num_images, -1, -1).reshape(-1, b)
            proposals.append(self.box2box_transform.apply_deltas(deltas_i, anchors_i).view(num_images, -1, b))
        return proposals

    def forward(self, image_sizes: List[Tuple[int, int]],
                features: Dict[str, Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Inference: per image (proposal boxes Tensor[Ri, 4] XYXY, objectness logits Tensor[Ri])."""
        anchors, logits, deltas = self._head_outputs(features)
        proposals = self._decode_proposals(anchors, deltas)
        return find_top_rpn_proposals(proposals, logits, image_sizes, self.nms_thresh, self.pre_nms_topk_test,
                                      self.post_nms_topk_test, self.min_box_size, False)

    @torch.jit.unused
    def forward_train(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                      gt_instances: List[Instances]):
        """Training: returns (proposal boxes per image, objectness logits per image, losses dict).

        Proposals are computed without gradient: the ROI heads treat them as fixed inputs.
        """
        anchors, logits, deltas = self._head_outputs(features)
        gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
        losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
        with torch.no_grad():
            proposals = self._decode_proposals(anchors, [d.detach() for d in deltas])
            boxes, scores = find_top_rpn_proposals(
                proposals, [s.detach() for s in logits], image_sizes, self.nms_thresh,
                self.pre_nms_topk_train, self.post_nms_topk_train, self.min_box_size, True)
        return boxes, scores, losses

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Tensor],
                                 gt_instances: List[Instances]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per image: anchor labels Tensor[R] (1 fg, 0 bg, -1 ignore; batch_size_per_image sampled)
        and the matched ground-truth box Tensor[R, 4] of every anchor."""
        all_anchors = torch.cat(anchors, dim=0)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            gt_boxes_i = inst.gt_boxes.tensor
            matched_idxs, labels_i = self.anchor_matcher(pairwise_iou(gt_boxes_i, all_anchors))
            labels_i = labels_i.to(device=gt_boxes_i.device)
            if self.anchor_boundary_thresh >= 0:
                h, w = inst.image_size
                t, s = all_anchors, self.anchor_boundary_thresh
                inside = (t[:, 0] >= -s) & (t[:, 1] >= -s) & (t[:, 2] < w + s) & (t[:, 3] < h + s)
                labels_i[~inside] = -1
            pos_idx, neg_idx = subsample_labels(labels_i, self.batch_size_per_image, self.positive_fraction, 0)
            labels_i.fill_(-1)
            labels_i.scatter_(0, pos_idx, 1)
            labels_i.scatter_(0, neg_idx, 0)
            if len(gt_boxes_i) == 0:
                matched = torch.zeros_like(all_anchors)
            else:
                matched = gt_boxes_i[matched_idxs]
            gt_labels.append(labels_i)
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes

    @torch.jit.unused
    def losses(self, anchors: List[Tensor], pred_objectness_logits: List[Tensor], gt_labels: List[Tensor],
               pred_anchor_deltas: List[Tensor], gt_boxes: List[Tensor]) -> Dict[str, Tensor]:
        """Objectness BCE over sampled anchors and box regression over positives, both
        normalized by the number of sampled anchors (batch_size_per_image * images)."""
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)
        pos_mask = labels == 1
        all_anchors = torch.cat(anchors, dim=0)
        pred_deltas = cat(pred_anchor_deltas, dim=1)
        if self.box_reg_loss_type == "smooth_l1":
            gt_deltas = torch.stack([self.box2box_transform.get_deltas(all_anchors, k) for k in gt_boxes])
            loss_loc = smooth_l1_loss(pred_deltas[pos_mask], gt_deltas[pos_mask], self.smooth_l1_beta,
                                      reduction="sum")
        else:
            pred_boxes = torch.stack([self.box2box_transform.apply_deltas(d, all_anchors) for d in pred_deltas])
            loss_loc = generalized_box_iou_loss(pred_boxes[pos_mask], torch.stack(gt_boxes)[pos_mask],
                                                reduction="sum")
        valid_mask = labels >= 0
        loss_cls = F.binary_cross_entropy_with_logits(cat(pred_objectness_logits, dim=1)[valid_mask],
                                                      labels[valid_mask].to(torch.float32), reduction="sum")
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_loc": loss_loc / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
