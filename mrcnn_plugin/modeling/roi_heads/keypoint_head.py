"""Keypoint head: ROI features -> a heatmap per keypoint, its loss, and keypoint decoding."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import Conv2d, ShapeSpec, cat
from ...registry import ROI_KEYPOINT_HEAD_REGISTRY, build_from_registry
from ...structures import Instances

__all__ = ["KRCNNConvDeconvUpsampleHead", "keypoint_rcnn_loss", "heatmaps_to_keypoints", "build_keypoint_head"]


@torch.jit.unused
def keypoint_rcnn_loss(pred_keypoint_logits: Tensor, instances: List[Instances],
                       normalizer: Optional[float]) -> Tensor:
    """Spatial softmax cross entropy: for every visible keypoint inside its ROI, the heatmap
    (flattened S*S logits) should put its mass on the keypoint's cell.

    pred_keypoint_logits: Tensor[R, K, S, S]; normalizer: divide by this, or by
    the number of visible keypoints when None.
    """
    heatmaps, valid = [], []
    side = pred_keypoint_logits.shape[2]
    for inst in instances:
        if len(inst) == 0:
            continue
        h, v = inst.gt_keypoints.to_heatmap(inst.proposal_boxes.tensor, side)
        heatmaps.append(h.view(-1))
        valid.append(v.view(-1))
    if len(heatmaps) == 0:
        return pred_keypoint_logits.sum() * 0
    targets = cat(heatmaps, dim=0)
    valid_idx = torch.nonzero(cat(valid, dim=0).to(torch.uint8)).squeeze(1)
    if valid_idx.numel() == 0:
        return pred_keypoint_logits.sum() * 0
    n, k, h, w = pred_keypoint_logits.shape
    logits = pred_keypoint_logits.reshape(n * k, h * w)
    loss = F.cross_entropy(logits[valid_idx], targets[valid_idx], reduction="sum")
    return loss / (valid_idx.numel() if normalizer is None else normalizer)


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> Tensor:
    """Decodes keypoint heatmaps into image coordinates.

    maps: Tensor[R, K, S, S] logits; rois: Tensor[R, 4] XYXY. Each ROI's maps
    are resized (bicubic) to the ROI's size in pixels (rounded up), and each
    keypoint is placed at the centre of its arg-max pixel. Returns Tensor[R, K, 4]:
    (x, y, logit at the peak, score), where score is the peak of a spatial
    softmax normalized over the S x S map, so it is comparable across ROI sizes.
    """
    offset_x = rois[:, 0]
    offset_y = rois[:, 1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil = widths.ceil()
    heights_ceil = heights.ceil()
    num_rois, num_keypoints = maps.shape[0], maps.shape[1]
    xy_preds = maps.new_zeros(rois.shape[0], num_keypoints, 4)
    width_corrections = widths / widths_ceil
    height_corrections = heights / heights_ceil
    keypoints_idx = torch.arange(num_keypoints, device=maps.device)
    for i in range(num_rois):
        outsize = [int(heights_ceil[i]), int(widths_ceil[i])]
        roi_map = F.interpolate(maps[i:i + 1], size=outsize, mode="bicubic", align_corners=False)[0]
        max_score, _ = roi_map.reshape(num_keypoints, -1).max(1)
        max_score = max_score.view(num_keypoints, 1, 1)
        tmp_full_resolution = (roi_map - max_score).exp_()
        tmp_pool_resolution = (maps[i] - max_score).exp_()
        roi_map_scores = tmp_full_resolution / tmp_pool_resolution.sum((1, 2), keepdim=True)
        w = roi_map.shape[2]
        pos = roi_map.reshape(num_keypoints, -1).argmax(1)
        x_int = pos % w
        y_int = torch.div(pos - x_int, w, rounding_mode="floor")
        x = (x_int.float() + 0.5) * width_corrections[i]
        y = (y_int.float() + 0.5) * height_corrections[i]
        xy_preds[i, :, 0] = x + offset_x[i]
        xy_preds[i, :, 1] = y + offset_y[i]
        xy_preds[i, :, 2] = roi_map[keypoints_idx, y_int, x_int]
        xy_preds[i, :, 3] = roi_map_scores[keypoints_idx, y_int, x_int]
    return xy_preds


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class KRCNNConvDeconvUpsampleHead(nn.Sequential):
    """Stacked 3x3 convolutions (conv_fcn1, ...), a 4x4 stride-2 transposed convolution
    (score_lowres) to one channel per keypoint, then bilinear 2x upsampling: 14 -> 56."""

    def __init__(self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: List[int],
                 loss_weight: float = 1.0, loss_normalizer="visible"):
        super().__init__()
        self.up_scale = 2.0
        channels = input_shape.channels
        for idx, layer_channels in enumerate(conv_dims, 1):
            self.add_module(f"conv_fcn{idx}", Conv2d(channels, layer_channels, 3, stride=1, padding=1))
            self.add_module(f"conv_fcn_relu{idx}", nn.ReLU(inplace=True))
            channels = layer_channels
        deconv_kernel = 4
        self.score_lowres = nn.ConvTranspose2d(channels, num_keypoints, deconv_kernel, stride=2,
                                               padding=deconv_kernel // 2 - 1)
        for name, param in self.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
        self.num_keypoints = num_keypoints
        self.loss_weight = loss_weight
        self.loss_normalizer = loss_normalizer

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "KRCNNConvDeconvUpsampleHead":
        k = cfg.MODEL.ROI_KEYPOINT_HEAD
        normalizer = "visible"
        if not k.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:
            normalizer = (cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE * cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION
                          * k.NUM_KEYPOINTS)
        return cls(input_shape, num_keypoints=k.NUM_KEYPOINTS, conv_dims=list(k.CONV_DIMS),
                   loss_weight=k.LOSS_WEIGHT, loss_normalizer=normalizer)

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> keypoint logits Tensor[R, K, 4S, 4S]."""
        for layer in self:
            x = layer(x)
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    @torch.jit.unused
    def losses(self, keypoint_logits: Tensor, instances: List[Instances]) -> Dict[str, Tensor]:
        normalizer = None if self.loss_normalizer == "visible" else len(instances) * self.loss_normalizer
        return {"loss_keypoint": keypoint_rcnn_loss(keypoint_logits, instances, normalizer) * self.loss_weight}


def build_keypoint_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Builds MODEL.ROI_KEYPOINT_HEAD.NAME."""
    return build_from_registry(ROI_KEYPOINT_HEAD_REGISTRY, cfg.MODEL.ROI_KEYPOINT_HEAD.NAME, cfg, input_shape)
