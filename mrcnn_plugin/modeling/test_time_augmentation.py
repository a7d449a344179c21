"""Test-time augmentation (TTA) of a GeneralizedRCNN: several scales and horizontal flips.

The Mask R-CNN paper's enhanced COCO results (its appendix, Table 8) combine the
model's results on scales 400 to 1200 (step 100) and their mirror images. Here,
configured by detectron2's keys TEST.AUG.MIN_SIZES, TEST.AUG.MAX_SIZE, TEST.AUG.FLIP:

1. Each image is resized to every short side in MIN_SIZES (long side at most
   MAX_SIZE), and with FLIP also mirrored: one augmented image per (size, flip).
2. The detector runs on each (backbone, RPN, box head: `roi_heads.forward_boxes`);
   its boxes are mapped back to the original image (un-mirrored, rescaled).
3. All boxes are merged by per-class NMS (MODEL.ROI_HEADS.NMS_THRESH_TEST),
   keeping the TEST.DETECTIONS_PER_IMAGE best.
4. Masks: the merged boxes are mapped into every augmented image, where the mask
   head predicts their masks (`roi_heads.forward_with_given_boxes`); the mask
   probabilities are un-mirrored and averaged, then pasted at the original size.

The backbone runs twice per augmented image (once for boxes, once for masks)
instead of keeping every augmentation's features in memory. Eager only (the
wrapper is not scriptable; the model inside may be). Keypoint models are not
supported: mirroring keypoint heatmaps needs the left/right keypoint pairs.
"""
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.resize import resize_bilinear_uint8
from ..data.transforms import resize_shortest_edge_size
from ..layers import batched_nms
from ..structures import clip_boxes, nonempty_boxes

__all__ = ["GeneralizedRCNNWithTTA", "augmentation_sizes", "unaugment_boxes", "augment_boxes"]


def augmentation_sizes(height: int, width: int, min_sizes: Sequence[int], max_size: int,
                       flip: bool) -> List[Tuple[int, int, bool]]:
    """The augmented images of a (height, width) image: (new_h, new_w, flipped) per min size,
    with the flipped version right after each when flip is True."""
    augs: List[Tuple[int, int, bool]] = []
    for min_size in min_sizes:
        new_h, new_w = resize_shortest_edge_size(height, width, int(min_size), max_size)
        augs.append((new_h, new_w, False))
        if flip:
            augs.append((new_h, new_w, True))
    return augs


def unaugment_boxes(boxes: Tensor, aug_size: Tuple[int, int], flipped: bool,
                    image_size: Tuple[int, int]) -> Tensor:
    """Boxes Tensor[D, 4] XYXY found in an augmented image of aug_size (h, w), mirrored when
    flipped, as boxes of the original image of image_size (h, w)."""
    aug_h, aug_w = aug_size
    out = boxes.clone()
    if flipped:
        out[:, 0] = aug_w - boxes[:, 2]
        out[:, 2] = aug_w - boxes[:, 0]
    out[:, 0::2] *= image_size[1] / aug_w
    out[:, 1::2] *= image_size[0] / aug_h
    return out


def augment_boxes(boxes: Tensor, aug_size: Tuple[int, int], flipped: bool, image_size: Tuple[int, int]) -> Tensor:
    """The inverse of `unaugment_boxes`: original-image boxes Tensor[D, 4] into the augmented image."""
    aug_h, aug_w = aug_size
    out = boxes.clone()
    out[:, 0::2] *= aug_w / image_size[1]
    out[:, 1::2] *= aug_h / image_size[0]
    if flipped:
        x0 = aug_w - out[:, 2]
        out[:, 2] = aug_w - out[:, 0]
        out[:, 0] = x0
    return out


def _resize_image(image: Tensor, new_h: int, new_w: int) -> Tensor:
    """image Tensor[C, H, W] -> Tensor[C, new_h, new_w]: PIL's bilinear (as the data pipeline)
    for uint8, bilinear interpolation otherwise; unchanged when the size already matches."""
    if image.shape[-2:] == (new_h, new_w):
        return image
    if image.dtype == torch.uint8:
        return resize_bilinear_uint8(image, new_h, new_w)
    return F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)[0]


class GeneralizedRCNNWithTTA(nn.Module):
    """A GeneralizedRCNN (or subclass) evaluated with test-time augmentation (module docstring).

    Inputs and outputs are the model's eager ones: a list of dicts with "image"
    (Tensor[C, H, W], any resolution) and optional "height" / "width" (the
    original size, where results are reported and whose short side MIN_SIZES
    refers to); returns one {"instances": Instances} per image. For the best
    quality feed original-resolution images (the trainer's TTA evaluation does):
    each augmented image is resampled once from the given one.
    """

    def __init__(self, model: nn.Module, *, min_sizes: Sequence[int], max_size: int, flip: bool,
                 nms_thresh: float, detections_per_image: int):
        super().__init__()
        roi_heads = getattr(model, "roi_heads", None)
        if roi_heads is None or not hasattr(roi_heads, "forward_boxes"):
            raise TypeError("Test-time augmentation needs a GeneralizedRCNN-like model whose roi_heads have "
                            f"forward_boxes and forward_with_given_boxes; got {type(model).__name__}")
        if getattr(roi_heads, "keypoint_on", False):
            raise NotImplementedError("Test-time augmentation does not support keypoint heads")
        if len(min_sizes) == 0:
            raise ValueError("TEST.AUG.MIN_SIZES is empty: no augmented image to run")
        self.model = model
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = int(max_size)
        self.flip = bool(flip)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_image = int(detections_per_image)

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> "GeneralizedRCNNWithTTA":
        """TEST.AUG.MIN_SIZES / MAX_SIZE / FLIP, MODEL.ROI_HEADS.NMS_THRESH_TEST, TEST.DETECTIONS_PER_IMAGE."""
        return cls(model, min_sizes=cfg.TEST.AUG.MIN_SIZES, max_size=cfg.TEST.AUG.MAX_SIZE, flip=cfg.TEST.AUG.FLIP,
                   nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                   detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """One {"instances": Instances} per input, at its "height" x "width"."""
        outputs = []
        for x in batched_inputs:
            size = self.model._output_size(x)
            outputs.append({"instances": self.model._to_instances(self.inference_one(x), size)})
        return outputs

    @torch.no_grad()
    def inference_one(self, x: Dict[str, Any]) -> Dict[str, Tensor]:
        """One input dict -> its merged detections as a dict of tensors at the original size
        (pred_boxes [D, 4], scores, pred_classes, and pred_masks bool [D, H, W] when the model has masks)."""
        height, width = self.model._output_size(x)
        augs = augmentation_sizes(height, width, self.min_sizes, self.max_size, self.flip)
        merged = self._merged_boxes(x["image"], augs, (height, width))
        if getattr(self.model.roi_heads, "mask_on", False):
            merged["pred_masks"] = self._averaged_masks(x["image"], augs, merged, (height, width))
        return self.model.postprocess(merged, (height, width), height, width)

    def _features(self, image: Tensor, aug: Tuple[int, int, bool]) -> Tuple[Dict[str, Tensor], Tuple[int, int]]:
        """Backbone features of one augmented image, and that image's (h, w)."""
        new_h, new_w, flipped = aug
        aug_image = _resize_image(image, new_h, new_w)
        if flipped:
            aug_image = aug_image.flip(-1)
        images, sizes = self.model.preprocess_image([{"image": aug_image}])
        return self.model.backbone(images), sizes[0]

    def _merged_boxes(self, image: Tensor, augs: List[Tuple[int, int, bool]],
                      image_size: Tuple[int, int]) -> Dict[str, Tensor]:
        """Detections of every augmented image in original-image pixels, merged by per-class NMS:
        pred_boxes [D, 4], scores [D], pred_classes [D], by decreasing score."""
        boxes, scores, classes = [], [], []
        for aug in augs:
            features, aug_size = self._features(image, aug)
            proposals, _ = self.model.proposal_generator([aug_size], features)
            det = self.model.roi_heads.forward_boxes([aug_size], features, proposals)[0]
            boxes.append(clip_boxes(unaugment_boxes(det["pred_boxes"], aug_size, aug[2], image_size), image_size))
            scores.append(det["scores"])
            classes.append(det["pred_classes"])
        all_boxes, all_scores, all_classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep = nonempty_boxes(all_boxes)
        all_boxes, all_scores, all_classes = all_boxes[keep], all_scores[keep], all_classes[keep]
        keep = batched_nms(all_boxes, all_scores, all_classes, self.nms_thresh)[: self.detections_per_image]
        return {"pred_boxes": all_boxes[keep], "scores": all_scores[keep], "pred_classes": all_classes[keep]}

    def _averaged_masks(self, image: Tensor, augs: List[Tuple[int, int, bool]], merged: Dict[str, Tensor],
                        image_size: Tuple[int, int]) -> Tensor:
        """Mask probabilities Tensor[D, 1, M, M] of the merged detections, averaged over the augmented
        images (each mask un-mirrored to the original orientation first)."""
        total = None
        for aug in augs:
            features, aug_size = self._features(image, aug)
            given = {"pred_boxes": augment_boxes(merged["pred_boxes"], aug_size, aug[2], image_size),
                     "scores": merged["scores"], "pred_classes": merged["pred_classes"]}
            masks = self.model.roi_heads.forward_with_given_boxes(features, [given])[0]["pred_masks"]
            if aug[2]:
                masks = masks.flip(-1)
            total = masks if total is None else total + masks
        return total / len(augs)
