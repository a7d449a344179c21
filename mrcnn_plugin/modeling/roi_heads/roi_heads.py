"""ROI heads: per-region classification, box refinement, masks and keypoints.

`forward` (scriptable inference) takes the proposal boxes of each image and
returns per image a dict of tensors: pred_boxes [D, 4], scores [D],
pred_classes [D], and pred_masks [D, 1, M, M] (probabilities) or
pred_keypoints [D, K, 3] when those heads are on. All in input-image pixels.
It is `forward_boxes` (the box head's detections) followed by
`forward_with_given_boxes` (masks / keypoints of given detections), which
test-time augmentation also calls separately.
`forward_train` (eager) samples proposals against the ground truth and
returns the heads' losses.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ...layers import ShapeSpec
from ...registry import ROI_HEADS_REGISTRY, build_from_registry
from ...structures import Boxes, Instances, pairwise_iou
from ..backbone.resnet import BottleneckBlock, make_stage
from ..matcher import Matcher
from ..poolers import ROIPooler, pooler_from_config
from ..sampling import subsample_labels
from .box_head import build_box_head
from .fast_rcnn import FastRCNNOutputLayers
from .keypoint_head import build_keypoint_head, heatmaps_to_keypoints
from .mask_head import build_mask_head, mask_rcnn_inference

__all__ = ["ROIHeads", "StandardROIHeads", "Res5ROIHeads", "build_roi_heads", "select_foreground_proposals",
           "select_proposals_with_visible_keypoints", "add_ground_truth_to_proposals"]


@torch.jit.unused
def add_ground_truth_to_proposals(gt_boxes: List[Boxes], proposals: List[Instances]) -> List[Instances]:
    """Appends each image's ground-truth boxes to its proposals, with a high objectness logit,
    so that early in training every ground truth has at least one matching ROI."""
    out = []
    for gt, props in zip(gt_boxes, proposals):
        gt_logit_value = torch.log(torch.tensor((1.0 - 1e-10) / (1 - (1.0 - 1e-10))))
        gt_logits = gt_logit_value.to(props.objectness_logits.device) * torch.ones(
            len(gt), device=props.objectness_logits.device)
        gt_proposal = Instances(props.image_size, proposal_boxes=Boxes(gt.tensor.to(props.proposal_boxes.device)),
                                objectness_logits=gt_logits)
        out.append(Instances.cat([props, gt_proposal]))
    return out


@torch.jit.unused
def select_foreground_proposals(proposals: List[Instances], bg_label: int) -> Tuple[List[Instances], List[Tensor]]:
    """Keeps proposals whose gt_classes is a foreground class; also returns the boolean masks."""
    fg_proposals, fg_masks = [], []
    for p in proposals:
        fg = (p.gt_classes != -1) & (p.gt_classes != bg_label)
        fg_proposals.append(p[torch.nonzero(fg).squeeze(1)])
        fg_masks.append(fg)
    return fg_proposals, fg_masks


@torch.jit.unused
def select_proposals_with_visible_keypoints(proposals: List[Instances]) -> List[Instances]:
    """Keeps proposals that contain at least one visible ground-truth keypoint of their instance."""
    ret = []
    for p in proposals:
        if len(p) == 0:
            ret.append(p)
            continue
        kp = p.gt_keypoints.tensor
        vis = kp[:, :, 2] >= 1
        xs, ys = kp[:, :, 0], kp[:, :, 1]
        b = p.proposal_boxes.tensor.unsqueeze(dim=1)
        inside = (xs >= b[:, :, 0]) & (xs <= b[:, :, 2]) & (ys >= b[:, :, 1]) & (ys <= b[:, :, 3])
        ret.append(p[torch.nonzero((inside & vis).any(dim=1)).squeeze(1)])
    return ret


def _replaced(features: Dict[str, Tensor], names: List[str], values: List[Tensor]) -> Dict[str, Tensor]:
    """A copy of `features` with features[names[i]] = values[i]."""
    out = features.copy()
    for name, value in zip(names, values):
        out[name] = value
    return out


class ROIHeads(nn.Module):
    """Shared training logic: matching proposals to ground truth and sampling a minibatch."""

    def __init__(self, *, num_classes: int, batch_size_per_image: int, positive_fraction: float,
                 proposal_matcher: Matcher, proposal_append_gt: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt

    @staticmethod
    def _base_config(cfg) -> Dict:
        h = cfg.MODEL.ROI_HEADS
        return dict(num_classes=h.NUM_CLASSES, batch_size_per_image=h.BATCH_SIZE_PER_IMAGE,
                    positive_fraction=h.POSITIVE_FRACTION, proposal_append_gt=h.PROPOSAL_APPEND_GT,
                    proposal_matcher=Matcher(h.IOU_THRESHOLDS, h.IOU_LABELS, allow_low_quality_matches=False))

    @torch.jit.unused
    def _sample_proposals(self, matched_idxs: Tensor, matched_labels: Tensor,
                          gt_classes: Tensor) -> Tuple[Tensor, Tensor]:
        """Indices of the sampled proposals and their class targets (num_classes = background)."""
        if gt_classes.numel() > 0:
            gt_classes = gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        fg, bg = subsample_labels(gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
        sampled = torch.cat([fg, bg], dim=0)
        return sampled, gt_classes[sampled]

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        """Samples batch_size_per_image proposals per image and attaches their targets
        (gt_classes, and gt_boxes / gt_masks / gt_keypoints of the matched instance)."""
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals([t.gt_boxes for t in targets], proposals)
        out = []
        for props, tgt in zip(proposals, targets):
            has_gt = len(tgt) > 0
            iou = pairwise_iou(tgt.gt_boxes.tensor, props.proposal_boxes.tensor)
            matched_idxs, matched_labels = self.proposal_matcher(iou)
            sampled, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            props = props[sampled]
            props.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled]
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[sampled_targets])
            out.append(props)
        return out


def _pooler_scales(input_shape: Dict[str, ShapeSpec], in_features: List[str]) -> List[float]:
    for f in in_features:
        if f not in input_shape:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES names {f!r}, which the backbone does not produce "
                             f"({list(input_shape)})")
    return [1.0 / input_shape[f].stride for f in in_features]


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """The FPN ROI heads: separate poolers and heads for boxes, masks and keypoints,
    each pooling from the pyramid level that suits the box size."""

    def __init__(self, *, box_in_features: List[str], box_pooler: ROIPooler, box_head: nn.Module,
                 box_predictor: FastRCNNOutputLayers, mask_in_features: Optional[List[str]] = None,
                 mask_pooler: Optional[ROIPooler] = None, mask_head: Optional[nn.Module] = None,
                 keypoint_in_features: Optional[List[str]] = None, keypoint_pooler: Optional[ROIPooler] = None,
                 keypoint_head: Optional[nn.Module] = None, **kwargs):
        super().__init__(**kwargs)
        self.in_features = self.box_in_features = list(box_in_features)
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        self.mask_in_features = list(mask_in_features or [])
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.keypoint_on = keypoint_head is not None
        self.keypoint_in_features = list(keypoint_in_features or [])
        self.keypoint_pooler = keypoint_pooler
        self.keypoint_head = keypoint_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "StandardROIHeads":
        ret = cls._base_config(cfg)
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        scales = _pooler_scales(input_shape, in_features)
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"Every ROI head input level needs the same channels, got {sorted(channels)}")
        in_channels = channels.pop()

        b = cfg.MODEL.ROI_BOX_HEAD
        ret["box_in_features"] = in_features
        ret["box_pooler"] = pooler_from_config(b, scales)
        box_head = build_box_head(cfg, ShapeSpec(channels=in_channels, height=b.POOLER_RESOLUTION,
                                                 width=b.POOLER_RESOLUTION))
        ret["box_head"] = box_head
        ret["box_predictor"] = FastRCNNOutputLayers.from_config(cfg, box_head.output_shape())

        if cfg.MODEL.MASK_ON:
            m = cfg.MODEL.ROI_MASK_HEAD
            ret["mask_in_features"] = in_features
            ret["mask_pooler"] = pooler_from_config(m, scales)
            ret["mask_head"] = build_mask_head(cfg, ShapeSpec(channels=in_channels, width=m.POOLER_RESOLUTION,
                                                              height=m.POOLER_RESOLUTION))
        if cfg.MODEL.KEYPOINT_ON:
            k = cfg.MODEL.ROI_KEYPOINT_HEAD
            ret["keypoint_in_features"] = in_features
            ret["keypoint_pooler"] = pooler_from_config(k, scales)
            ret["keypoint_head"] = build_keypoint_head(
                cfg, ShapeSpec(channels=in_channels, width=k.POOLER_RESOLUTION, height=k.POOLER_RESOLUTION))
        return cls(**ret)

    def forward(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                proposal_boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """Inference; see the module docstring for the outputs."""
        features = self._features_for_poolers(features)
        return self.forward_with_given_boxes(features, self.forward_boxes(image_sizes, features, proposal_boxes))

    def _features_for_poolers(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """features with the box pooler's maps in the memory format its kernel reads without a copy
        (`ROIPooler.prepare_features`); the mask and keypoint poolers read the same maps, so the
        conversion (a copy of each level) is done once for all of them."""
        names = self.box_in_features
        return _replaced(features, names, self.box_pooler.prepare_features([features[f] for f in names]))

    def forward_boxes(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                      proposal_boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """The box head's detections per image: pred_boxes [D, 4], scores [D], pred_classes [D]."""
        box_features = self.box_pooler([features[f] for f in self.box_in_features], proposal_boxes)
        box_features = self.box_head(box_features)
        scores, deltas = self.box_predictor(box_features)
        detections = self.box_predictor.inference(scores, deltas, proposal_boxes, image_sizes)
        results: List[Dict[str, Tensor]] = []
        for boxes, det_scores, classes, _ in detections:
            results.append({"pred_boxes": boxes, "scores": det_scores, "pred_classes": classes})
        return results

    def forward_with_given_boxes(self, features: Dict[str, Tensor],
                                 results: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        """Adds mask and keypoint predictions to detections given as pred_boxes / pred_classes."""
        boxes = [r["pred_boxes"] for r in results]
        num_per_image = [int(b.shape[0]) for b in boxes]
        mask_pooler = self.mask_pooler
        mask_head = self.mask_head
        if mask_pooler is not None and mask_head is not None:
            x = mask_pooler([features[f] for f in self.mask_in_features], boxes)
            logits = mask_head(x)
            classes = torch.cat([r["pred_classes"] for r in results], dim=0)
            probs = mask_rcnn_inference(logits, classes, mask_head.loss_type)
            for r, p in zip(results, probs.split(num_per_image)):
                r["pred_masks"] = p
        keypoint_pooler = self.keypoint_pooler
        keypoint_head = self.keypoint_head
        if keypoint_pooler is not None and keypoint_head is not None:
            x = keypoint_pooler([features[f] for f in self.keypoint_in_features], boxes)
            logits = keypoint_head(x)
            keypoints = heatmaps_to_keypoints(logits, torch.cat(boxes, dim=0))
            for r, kp, heat in zip(results, keypoints.split(num_per_image), logits.split(num_per_image)):
                r["pred_keypoints"] = kp[:, :, [0, 1, 3]]
                r["pred_keypoint_heatmaps"] = heat
        return results

    @torch.jit.unused
    def forward_train(self, features: Dict[str, Tensor], proposals: List[Instances],
                      targets: List[Instances]) -> Dict[str, Tensor]:
        """Training losses of the box head and, when on, the mask and keypoint heads."""
        features = self._features_for_poolers(features)
        proposals = self.label_and_sample_proposals(proposals, targets)
        boxes = [p.proposal_boxes.tensor for p in proposals]
        box_features = self.box_head(self.box_pooler([features[f] for f in self.box_in_features], boxes))
        losses = self.box_predictor.losses(self.box_predictor(box_features), proposals)
        if self.mask_on or self.keypoint_on:
            fg_proposals, _ = select_foreground_proposals(proposals, self.num_classes)
        if self.mask_on:
            fg_boxes = [p.proposal_boxes.tensor for p in fg_proposals]
            x = self.mask_pooler([features[f] for f in self.mask_in_features], fg_boxes)
            losses.update(self.mask_head.losses(self.mask_head(x), fg_proposals))
        if self.keypoint_on:
            kp_proposals = select_proposals_with_visible_keypoints(fg_proposals)
            kp_boxes = [p.proposal_boxes.tensor for p in kp_proposals]
            x = self.keypoint_pooler([features[f] for f in self.keypoint_in_features], kp_boxes)
            losses.update(self.keypoint_head.losses(self.keypoint_head(x), kp_proposals))
        return losses


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """The C4 ROI heads: ROIs pooled from res4 go through ResNet's res5 stage, shared by the
    box predictor (after global average pooling) and the mask head."""

    def __init__(self, *, in_features: List[str], pooler: ROIPooler, res5: nn.Module,
                 box_predictor: FastRCNNOutputLayers, mask_head: Optional[nn.Module] = None, **kwargs):
        super().__init__(**kwargs)
        if len(in_features) != 1:
            raise ValueError(f"Res5ROIHeads pools from one feature map, got MODEL.ROI_HEADS.IN_FEATURES={in_features}")
        self.in_features = list(in_features)
        self.pooler = pooler
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "Res5ROIHeads":
        ret = cls._base_config(cfg)
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        scales = _pooler_scales(input_shape, in_features)
        b = cfg.MODEL.ROI_BOX_HEAD
        if cfg.MODEL.KEYPOINT_ON:
            raise ValueError("Res5ROIHeads has no keypoint head; use StandardROIHeads for MODEL.KEYPOINT_ON")
        r = cfg.MODEL.RESNETS
        stage_channel_factor = 2 ** 3  # res5 is 8x res2's width
        out_channels = r.RES2_OUT_CHANNELS * stage_channel_factor
        res5 = make_stage(BottleneckBlock, 3, in_channels=out_channels // 2, out_channels=out_channels,
                          first_stride=2, bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * stage_channel_factor,
                          num_groups=r.NUM_GROUPS, norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1)
        ret.update(in_features=in_features, res5=res5,
                   pooler=pooler_from_config(b, scales),
                   box_predictor=FastRCNNOutputLayers.from_config(cfg, ShapeSpec(channels=out_channels)))
        if cfg.MODEL.MASK_ON:
            # The mask head sees res5's output: the pooled ROI at half resolution (stride-2 first block).
            res5_size = (b.POOLER_RESOLUTION + 1) // 2
            ret["mask_head"] = build_mask_head(cfg, ShapeSpec(channels=out_channels, width=res5_size,
                                                              height=res5_size))
        return cls(**ret)

    def _shared_roi_transform(self, features: Dict[str, Tensor], boxes: List[Tensor]) -> Tensor:
        """Pooled res4 features through res5: Tensor[R, 2048, S/2, S/2]."""
        return self.res5(self.pooler([features[f] for f in self.in_features], boxes))

    def forward(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                proposal_boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """Inference; see the module docstring for the outputs."""
        features = self._features_for_poolers(features)
        return self.forward_with_given_boxes(features, self.forward_boxes(image_sizes, features, proposal_boxes))

    def _features_for_poolers(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """features with the pooler's map in the memory format its kernel reads without a copy
        (`ROIPooler.prepare_features`), converted once for the box and the mask pooling."""
        names = self.in_features
        return _replaced(features, names, self.pooler.prepare_features([features[f] for f in names]))

    def forward_boxes(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                      proposal_boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """The box predictor's detections per image: pred_boxes [D, 4], scores [D], pred_classes [D]."""
        box_features = self._shared_roi_transform(features, proposal_boxes)
        scores, deltas = self.box_predictor(box_features.mean(dim=[2, 3]))
        detections = self.box_predictor.inference(scores, deltas, proposal_boxes, image_sizes)
        results: List[Dict[str, Tensor]] = []
        for boxes, det_scores, classes, _ in detections:
            results.append({"pred_boxes": boxes, "scores": det_scores, "pred_classes": classes})
        return results

    def forward_with_given_boxes(self, features: Dict[str, Tensor],
                                 results: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        """Adds mask predictions to detections given as pred_boxes / pred_classes."""
        mask_head = self.mask_head
        if mask_head is not None:
            boxes = [r["pred_boxes"] for r in results]
            x = self._shared_roi_transform(features, boxes)
            classes = torch.cat([r["pred_classes"] for r in results], dim=0)
            probs = mask_rcnn_inference(mask_head(x), classes, mask_head.loss_type)
            for r, p in zip(results, probs.split([int(b.shape[0]) for b in boxes])):
                r["pred_masks"] = p
        return results

    @torch.jit.unused
    def forward_train(self, features: Dict[str, Tensor], proposals: List[Instances],
                      targets: List[Instances]) -> Dict[str, Tensor]:
        """Training losses of the box predictor and, when on, the mask head."""
        features = self._features_for_poolers(features)
        proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self._shared_roi_transform(features, [p.proposal_boxes.tensor for p in proposals])
        losses = self.box_predictor.losses(self.box_predictor(box_features.mean(dim=[2, 3])), proposals)
        if self.mask_on:
            fg_proposals, fg_masks = select_foreground_proposals(proposals, self.num_classes)
            mask_features = box_features[torch.cat(fg_masks, dim=0)]
            losses.update(self.mask_head.losses(self.mask_head(mask_features), fg_proposals))
        return losses


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Builds MODEL.ROI_HEADS.NAME from the backbone's output shapes."""
    return build_from_registry(ROI_HEADS_REGISTRY, cfg.MODEL.ROI_HEADS.NAME, cfg, input_shape)
