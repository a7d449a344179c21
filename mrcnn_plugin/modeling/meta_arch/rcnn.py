"""GeneralizedRCNN: the whole detector, one stage after another.

    image -> preprocess (normalize, pad) -> backbone -> proposal generator (RPN)
          -> ROI heads (boxes, masks, keypoints) -> postprocess (original image size)

Inputs follow detectron2: a list of dicts, one per image, with
  "image": Tensor[C, H, W] (uint8 or float, colour order cfg.INPUT.FORMAT),
  optional "height", "width": the size to report results at (the original image),
  and in training "instances": Instances with gt_boxes, gt_classes, and
  gt_masks / gt_keypoints when those heads are on.
Outputs: in training a dict of losses; in inference, eager, one
{"instances": Instances} per image with pred_boxes (Boxes), scores,
pred_classes, pred_masks (bool [D, H, W]) and pred_keypoints ([D, K, 3]);
scripted, one dict of those tensors per image (pred_boxes as Tensor[D, 4]).
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ...layers import ShapeSpec
from ...registry import META_ARCH_REGISTRY
from ...structures import Boxes, ImageList, Instances, pad_images
from ..backbone import build_backbone
from ..postprocessing import detector_postprocess
from ..proposal_generator import build_proposal_generator
from ..roi_heads import build_roi_heads

__all__ = ["GeneralizedRCNN"]


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Backbone + proposal generator + ROI heads, with detectron2's inputs and outputs."""

    def __init__(self, *, backbone: nn.Module, proposal_generator: nn.Module, roi_heads: nn.Module,
                 pixel_mean: List[float], pixel_std: List[float], input_format: str = "BGR"):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"PIXEL_MEAN {pixel_mean} and PIXEL_STD {pixel_std} differ in length")
        # Plain tensors, not buffers: they come from the config and must stay out
        # of the state_dict, which a scripted module's non-persistent buffers
        # would not. They are moved to each image's device when used.
        self.pixel_mean = torch.tensor(pixel_mean).view(-1, 1, 1)
        self.pixel_std = torch.tensor(pixel_std).view(-1, 1, 1)
        self.size_divisibility: int = int(backbone.size_divisibility)

    @classmethod
    def from_config(cls, cfg) -> "GeneralizedRCNN":
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        shapes = backbone.output_shape()
        return cls(backbone=backbone, proposal_generator=build_proposal_generator(cfg, shapes),
                   roi_heads=build_roi_heads(cfg, shapes), pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
                   pixel_std=list(cfg.MODEL.PIXEL_STD), input_format=cfg.INPUT.FORMAT)

    @property
    @torch.jit.unused
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> Tuple[Tensor, List[Tuple[int, int]]]:
        """Normalizes and pads the images: returns (Tensor[N, C, H, W] padded to the backbone's
        size divisibility, each image's (height, width) before padding).

        Eager, images are moved to the model's device; scripted, they must already be there.
        """
        images: List[Tensor] = []
        sizes: List[Tuple[int, int]] = []
        for x in batched_inputs:
            image = x["image"]
            if not torch.jit.is_scripting():
                image = image.to(self.device)
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError("Expected an image Tensor[C, H, W] with C = len(MODEL.PIXEL_MEAN), got shape "
                                 + str(list(image.shape)))
            mean = self.pixel_mean.to(image.device)
            std = self.pixel_std.to(image.device)
            images.append((image - mean) / std)
            sizes.append((int(image.shape[-2]), int(image.shape[-1])))
        return pad_images(images, self.size_divisibility), sizes

    def forward(self, batched_inputs: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        """See the module docstring. Scripted, this is inference only."""
        if not torch.jit.is_scripting():
            if self.training:
                return self.forward_train(batched_inputs)
            results = self.inference(batched_inputs)
            return [{"instances": self._to_instances(r, self._output_size(x))}
                    for r, x in zip(results, batched_inputs)]
        return self.inference(batched_inputs)

    def inference(self, batched_inputs: List[Dict[str, Tensor]], do_postprocess: bool = True
                  ) -> List[Dict[str, Tensor]]:
        """Detections per image as dicts of tensors, at the original size when do_postprocess."""
        images, image_sizes = self.preprocess_image(batched_inputs)
        features = self.backbone(images)
        proposal_boxes, _ = self.proposal_generator(image_sizes, features)
        results = self.roi_heads(image_sizes, features, proposal_boxes)
        if not do_postprocess:
            return results
        processed: List[Dict[str, Tensor]] = []
        for result, x, image_size in zip(results, batched_inputs, image_sizes):
            height, width = self._output_size(x)
            processed.append(self.postprocess(result, image_size, height, width))
        return processed

    def postprocess(self, result: Dict[str, Tensor], image_size: Tuple[int, int], height: int,
                    width: int) -> Dict[str, Tensor]:
        """One image's detections from the network's input size (image_size) to (height, width)."""
        return detector_postprocess(result, image_size, height, width)

    @staticmethod
    def _output_size(x: Dict[str, Tensor]) -> Tuple[int, int]:
        """(height, width) to report one image's results at: its "height"/"width", else its size."""
        height = int(x["height"]) if "height" in x else int(x["image"].shape[-2])
        width = int(x["width"]) if "width" in x else int(x["image"].shape[-1])
        return height, width

    @torch.jit.unused
    def _to_instances(self, result: Dict[str, Tensor], image_size: Tuple[int, int]) -> Instances:
        """Wraps a result dict as detectron2's Instances (pred_boxes as Boxes)."""
        inst = Instances(image_size)
        for name, value in result.items():
            inst.set(name, Boxes(value) if name == "pred_boxes" else value)
        return inst

    @torch.jit.unused
    def forward_train(self, batched_inputs: List[Dict]) -> Dict[str, Tensor]:
        """Losses of the RPN and the ROI heads for a batch with "instances" annotations."""
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("Training inputs need an 'instances' field with the ground truth")
        images, image_sizes = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images)
        boxes, logits, proposal_losses = self.proposal_generator.forward_train(image_sizes, features, gt_instances)
        proposals = [Instances(size, proposal_boxes=Boxes(b), objectness_logits=s)
                     for size, b, s in zip(image_sizes, boxes, logits)]
        detector_losses = self.roi_heads.forward_train(features, proposals, gt_instances)
        losses: Dict[str, Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses
