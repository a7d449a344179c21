"""torchvision's Mask / Keypoint R-CNN semantics, as registered components of this package.

With weights converted by `convert_torchvision` and a config of
configs/torchvision/, the model computes what torchvision's
`maskrcnn_resnet50_fpn` / `keypointrcnn_resnet50_fpn` compute. Most of the two
pipelines are already the same math (ResNet with the stride in the 3x3
convolution, FPN, RPN, 2-FC box head, box coder (10, 10, 5, 5), mask and
keypoint heads; batch-norm eps: see `convert_torchvision`). What differs is config
values (input format and normalisation, ROIAlign without the half-pixel
shift and 2 samples per bin, 91-class layout, RPN top-n) and five pieces of
code, each a component here, named in the configs:

  TorchvisionAnchorGenerator (ANCHOR_GENERATOR): cell anchors rounded to
      integers, and each level's stride taken as (padded image size) //
      (feature map size), per axis, as torchvision's AnchorGenerator does (for
      p6 of an 800-high input that is 800 // 13 = 61, not 64).
  TorchvisionRPN (PROPOSAL_GENERATOR): drops proposals smaller than 1e-3 px,
      torchvision's fixed RegionProposalNetwork.min_size.
  TorchvisionROIHeads (ROI_HEADS): pooling level floor(4 + log2(sqrt(area) / 224)
      + 1e-6) (torchvision's LevelMapper), and boxes narrower or lower than
      1e-2 px dropped before the per-class NMS.
  TorchvisionGeneralizedRCNN (META_ARCHITECTURE): results rescaled with
      float32 ratios and not clipped, masks pasted torchvision's way (the
      28x28 mask padded by one pixel, resized with bilinear interpolation into
      the integer-rounded, enlarged box) and kept where the probability is
      > 0.5 (torchvision's COCO evaluation threshold).

Input: torchvision resizes inside the model (a float 0-1 image, bilinear,
scale = min(min_size / short side, max_size / long side), output size
floor(side * scale)); this model takes an already resized image, so feed it
`torchvision_resize(image)`, which does exactly that resize and returns the
image in 0-255 units for the config's PIXEL_MEAN / PIXEL_STD.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint.convert import convert_torchvision
from ..layers import ShapeSpec, batched_nms
from ..modeling.anchor_generator import DefaultAnchorGenerator
from ..modeling.meta_arch.rcnn import GeneralizedRCNN
from ..modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from ..modeling.proposal_generator.rpn import RPN
from ..modeling.roi_heads.roi_heads import StandardROIHeads
from ..registry import (ANCHOR_GENERATOR_REGISTRY, META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY,
                        ROI_HEADS_REGISTRY)
from ..structures import box_area, clip_boxes

__all__ = ["torchvision_resize", "torchvision_cell_anchors", "TorchvisionAnchorGenerator", "TorchvisionRPN",
           "TorchvisionROIPooler", "TorchvisionROIHeads", "TorchvisionGeneralizedRCNN", "paste_masks_torchvision",
           "torchvision_postprocess", "convert_torchvision"]

# torchvision's fixed thresholds (not configurable there either).
RPN_MIN_SIZE = 1e-3
BOX_MIN_SIZE = 1e-2
LEVEL_EPS = 1e-6


def torchvision_resize(image: Tensor, min_size: int = 800, max_size: int = 1333) -> Tensor:
    """Resizes like torchvision's GeneralizedRCNNTransform at test time.

    image: Tensor[3, H, W], uint8 (or float in 0-255 units). The image is
    scaled to 0-1 as torchvision's input is, resized by
    scale = min(min_size / min(H, W), max_size / max(H, W)) with bilinear
    interpolation (align_corners=False) to floor(H * scale) x floor(W * scale),
    sampling with the recomputed factor input / output size, as
    interpolate(recompute_scale_factor=True) does, and returned as float32
    Tensor[3, h, w] in 0-255 units. Channel order is kept (torchvision models want RGB).
    """
    x = image.to(torch.float32) / 255.0
    height, width = int(x.shape[-2]), int(x.shape[-1])
    scale = min(float(min_size) / min(height, width), float(max_size) / max(height, width))
    resized = F.interpolate(x[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                            align_corners=False)[0]
    return resized * 255.0


def torchvision_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors centred on (0, 0) as torchvision builds them: Tensor[len(ratios) * len(sizes), 4], XYXY.

    Width size / sqrt(ratio), height size * sqrt(ratio), computed in float32 and
    rounded to integers; aspect ratios vary slowest (torchvision's order, which
    a converted RPN head's channels follow).
    """
    scales = torch.as_tensor(list(sizes), dtype=torch.float32)
    ratios = torch.as_tensor(list(aspect_ratios), dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


@ANCHOR_GENERATOR_REGISTRY.register()
class TorchvisionAnchorGenerator(DefaultAnchorGenerator):
    """torchvision's AnchorGenerator: rounded cell anchors and strides measured from the padded input.

    The padded input's size is recovered as the finest level's size times its
    stride (exact for a backbone whose input is padded to its size divisibility).
    Each level's stride is that size // the level's size, per axis.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: List[int], offset: float = 0.0):
        super().__init__(sizes, aspect_ratios, strides, offset)
        if offset != 0.0:
            raise ValueError("TorchvisionAnchorGenerator places anchors at offset 0 (torchvision's); "
                             f"got MODEL.ANCHOR_GENERATOR.OFFSET {offset}")
        num = self.num_features
        sizes_per_level = [list(sizes[0])] * num if len(sizes) == 1 else [list(s) for s in sizes]
        ratios_per_level = [list(aspect_ratios[0])] * num if len(aspect_ratios) == 1 else \
            [list(a) for a in aspect_ratios]
        self.cell_anchors = [torchvision_cell_anchors(s, a) for s, a in zip(sizes_per_level, ratios_per_level)]

    def forward(self, features: List[Tensor]) -> List[Tensor]:
        """features: one Tensor[N, C, Hi, Wi] per level -> anchors Tensor[Hi * Wi * A, 4] per level."""
        device = features[0].device
        image_h = int(features[0].shape[-2]) * self.strides[0]
        image_w = int(features[0].shape[-1]) * self.strides[0]
        anchors: List[Tensor] = []
        for i, cell_anchors in enumerate(self.cell_anchors):
            grid_h, grid_w = int(features[i].shape[-2]), int(features[i].shape[-1])
            shifts_x = torch.arange(0, grid_w, dtype=torch.int32, device=device) * (image_w // grid_w)
            shifts_y = torch.arange(0, grid_h, dtype=torch.int32, device=device) * (image_h // grid_h)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x = shift_x.reshape(-1)
            shift_y = shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            base = cell_anchors.to(device)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors


@PROPOSAL_GENERATOR_REGISTRY.register()
class TorchvisionRPN(RPN):
    """The RPN with torchvision's minimum proposal size (1e-3 px) instead of MODEL.PROPOSAL_GENERATOR.MIN_SIZE."""

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "TorchvisionRPN":
        rpn = super().from_config(cfg, input_shape)
        rpn.min_box_size = RPN_MIN_SIZE
        return rpn


def torchvision_box_levels(boxes: List[Tensor], min_level: int, max_level: int, canonical_box_size: int,
                           canonical_level: int, eps: float = LEVEL_EPS) -> Tensor:
    """torchvision's LevelMapper: floor(canonical_level + log2(sqrt(area) / canonical_box_size) + eps),
    clamped to [min_level, max_level], as an index from min_level. boxes: Tensor[Ri, 4] per image."""
    sizes = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size)
                         + torch.tensor(eps, dtype=sizes.dtype))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


class TorchvisionROIPooler(ROIPooler):
    """ROIPooler whose level assignment is torchvision's (`torchvision_box_levels`)."""

    def forward(self, x: List[Tensor], boxes: List[Tensor]) -> Tensor:
        """x: one Tensor[N, C, Hl, Wl] per level; boxes: one Tensor[Ri, 4] per image -> Tensor[sum Ri, C, S, S]."""
        pooler_fmt_boxes = convert_boxes_to_pooler_format(boxes)
        if len(self.level_poolers) == 1:
            return self.level_poolers[0](x[0], pooler_fmt_boxes)
        level_assignments = torchvision_box_levels(boxes, self.min_level, self.max_level,
                                                   self.canonical_box_size, self.canonical_level)
        output = torch.zeros((pooler_fmt_boxes.shape[0], x[0].shape[1], self.output_size[0], self.output_size[1]),
                             dtype=x[0].dtype, device=x[0].device)
        for level, pooler in enumerate(self.level_poolers):
            inds = torch.nonzero(level_assignments == level).squeeze(1)
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output


@ROI_HEADS_REGISTRY.register()
class TorchvisionROIHeads(StandardROIHeads):
    """StandardROIHeads with torchvision's pooling levels and box post-processing (module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.box_min_size: float = BOX_MIN_SIZE

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "TorchvisionROIHeads":
        heads = super().from_config(cfg, input_shape)
        scales = [1.0 / input_shape[f].stride for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]

        def pooler(section) -> TorchvisionROIPooler:
            return TorchvisionROIPooler(section.POOLER_RESOLUTION, scales, section.POOLER_SAMPLING_RATIO,
                                        section.POOLER_TYPE,
                                        bin_reduction=section.get("POOLER_BIN_REDUCTION", "avg"))

        heads.box_pooler = pooler(cfg.MODEL.ROI_BOX_HEAD)
        if heads.mask_pooler is not None:
            heads.mask_pooler = pooler(cfg.MODEL.ROI_MASK_HEAD)
        if heads.keypoint_pooler is not None:
            heads.keypoint_pooler = pooler(cfg.MODEL.ROI_KEYPOINT_HEAD)
        return heads

    def forward_boxes(self, image_sizes: List[Tuple[int, int]], features: Dict[str, Tensor],
                      proposal_boxes: List[Tensor]) -> List[Dict[str, Tensor]]:
        """The box head's detections per image, torchvision's way: pred_boxes [D, 4], scores, pred_classes.
        (`forward`, inherited, adds masks / keypoints.)"""
        box_features = self.box_pooler([features[f] for f in self.box_in_features], proposal_boxes)
        scores, deltas = self.box_predictor(self.box_head(box_features))
        boxes = self.box_predictor.box2box_transform.apply_deltas(deltas, torch.cat(proposal_boxes, dim=0))
        probs = self.box_predictor.predict_probs(scores)
        num_per_image = [int(b.shape[0]) for b in proposal_boxes]
        results: List[Dict[str, Tensor]] = []
        for boxes_i, probs_i, image_size in zip(boxes.split(num_per_image), probs.split(num_per_image),
                                                image_sizes):
            results.append(self._detections_one_image(boxes_i, probs_i, image_size))
        return results

    def _detections_one_image(self, boxes: Tensor, probs: Tensor, image_size: Tuple[int, int]) -> Dict[str, Tensor]:
        """torchvision's RoIHeads.postprocess_detections for one image.

        boxes: Tensor[R, K*4] (or [R, 4] class-agnostic); probs: Tensor[R, K+1], background last.
        Clip, drop background, keep score > threshold, drop boxes under 1e-2 px,
        per-class NMS, keep the best detections_per_image.
        """
        num_classes = probs.shape[1] - 1
        boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(boxes.shape[0], -1, 4)
        boxes = boxes.expand(boxes.shape[0], num_classes, 4)
        labels = torch.arange(num_classes, device=probs.device).view(1, -1).expand(probs.shape[0], num_classes)
        boxes = boxes.reshape(-1, 4)
        scores = probs[:, :-1].reshape(-1)
        labels = labels.reshape(-1)
        keep = torch.nonzero(scores > self.box_predictor.test_score_thresh).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = torch.nonzero((widths >= self.box_min_size) & (heights >= self.box_min_size)).squeeze(1)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.box_predictor.test_nms_thresh)
        if self.box_predictor.test_topk_per_image >= 0:
            keep = keep[: self.box_predictor.test_topk_per_image]
        return {"pred_boxes": boxes[keep], "scores": scores[keep], "pred_classes": labels[keep]}


def _paste_one_mask_torchvision(mask: Tensor, box: Tensor, img_h: int, img_w: int,
                                threshold: float) -> Tuple[Tensor, int, int, int, int]:
    """One padded mask Tensor[M+2, M+2] resized into its integer box Tensor[4] (int64), thresholded.

    Returns (bool Tensor[y1 - y0, x1 - x0], x0, y0, x1, y1): the part inside the image.
    """
    bx0, by0, bx1, by1 = int(box[0]), int(box[1]), int(box[2]), int(box[3])
    w = max(bx1 - bx0 + 1, 1)
    h = max(by1 - by0 + 1, 1)
    resized = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    x0, y0 = max(bx0, 0), max(by0, 0)
    x1, y1 = min(bx1 + 1, img_w), min(by1 + 1, img_h)
    region = resized[y0 - by0: y1 - by0, x0 - bx0: x1 - bx0] > threshold
    return region, x0, y0, x1, y1


def paste_masks_torchvision(masks: Tensor, boxes: Tensor, image_shape: Tuple[int, int],
                            threshold: float = 0.5) -> Tensor:
    """Full-image masks the way torchvision pastes them.

    masks: Tensor[N, 1, M, M] (or [N, M, M]) probabilities; boxes: Tensor[N, 4]
    XYXY in image pixels; image_shape: (height, width). Each mask is padded by
    one pixel, its box enlarged by (M + 2) / M about the centre and truncated to
    integers, the mask resized bilinearly to (y1 - y0 + 1) x (x1 - x0 + 1) and
    placed there. Returns Tensor[N, H, W] bool: probability > threshold.
    """
    if masks.dim() == 3:
        masks = masks[:, None]
    img_h, img_w = image_shape
    side = masks.shape[-1]
    scale = float(side + 2) / side
    padded = F.pad(masks, (1, 1, 1, 1))
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    int_boxes = torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1).to(torch.int64)
    out = torch.zeros((masks.shape[0], img_h, img_w), dtype=torch.bool, device=masks.device)
    for i in range(masks.shape[0]):
        region, x0, y0, x1, y1 = _paste_one_mask_torchvision(padded[i, 0], int_boxes[i], img_h, img_w, threshold)
        if x1 > x0 and y1 > y0:
            out[i, y0:y1, x0:x1] = region
    return out


def torchvision_postprocess(result: Dict[str, Tensor], input_size: Tuple[int, int], output_height: int,
                            output_width: int, mask_threshold: float = 0.5) -> Dict[str, Tensor]:
    """torchvision's GeneralizedRCNNTransform.postprocess for one image's detections.

    result: pred_boxes [D, 4], scores, pred_classes, optional pred_masks
    [D, 1, M, M] probabilities and pred_keypoints [D, K, 3], at input_size
    (height, width). Boxes and keypoints are scaled by float32 ratios
    (output / input) and not clipped; masks become bool Tensor[D, H, W]
    (`paste_masks_torchvision`).
    """
    ratio_h = torch.tensor(float(output_height), dtype=torch.float32) / torch.tensor(float(input_size[0]),
                                                                                     dtype=torch.float32)
    ratio_w = torch.tensor(float(output_width), dtype=torch.float32) / torch.tensor(float(input_size[1]),
                                                                                    dtype=torch.float32)
    out: Dict[str, Tensor] = {}
    for name, value in result.items():
        out[name] = value
    boxes = result["pred_boxes"]
    ratio_h = ratio_h.to(boxes.device)
    ratio_w = ratio_w.to(boxes.device)
    boxes = torch.stack((boxes[:, 0] * ratio_w, boxes[:, 1] * ratio_h, boxes[:, 2] * ratio_w,
                         boxes[:, 3] * ratio_h), dim=1)
    out["pred_boxes"] = boxes
    if "pred_masks" in result:
        out["pred_masks"] = paste_masks_torchvision(result["pred_masks"], boxes, (output_height, output_width),
                                                    mask_threshold)
    if "pred_keypoints" in result:
        keypoints = result["pred_keypoints"].clone()
        keypoints[:, :, 0] *= ratio_w
        keypoints[:, :, 1] *= ratio_h
        out["pred_keypoints"] = keypoints
    return out


@META_ARCH_REGISTRY.register()
class TorchvisionGeneralizedRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose results are rescaled and masks pasted as torchvision does
    (`torchvision_postprocess`). Inputs are this package's: an already resized image
    (`torchvision_resize`) and the original "height" / "width"."""

    def postprocess(self, result: Dict[str, Tensor], image_size: Tuple[int, int], height: int,
                    width: int) -> Dict[str, Tensor]:
        """torchvision's rescaling and mask paste instead of detectron2's."""
        return torchvision_postprocess(result, image_size, height, width)
