"""Mask head: ROI features -> an M x M mask logit per class, its loss, and inference."""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import Conv2d, ShapeSpec, cat, get_norm
from ...registry import ROI_MASK_HEAD_REGISTRY, build_from_registry
from ...structures import Instances

__all__ = ["MaskRCNNConvUpsampleHead", "MaskRCNNMLPHead", "mask_rcnn_loss", "mask_rcnn_inference",
           "build_mask_head"]

MASK_LOSS_TYPES = ("sigmoid", "softmax")


@torch.jit.unused
def mask_rcnn_loss(pred_mask_logits: Tensor, instances: List[Instances], loss_type: str = "sigmoid") -> Tensor:
    """Mask loss on foreground ROIs, against the ground-truth mask cropped to each ROI.

    pred_mask_logits: Tensor[R, K, M, M] (K = 1 when class-agnostic); instances
    carry proposal_boxes, gt_classes and gt_masks (PolygonMasks or BitMasks).
    loss_type "sigmoid": binary cross entropy of the ground-truth class's mask
    (the paper's choice); "softmax": cross entropy across classes per pixel
    (the paper's "multinomial" ablation).
    """
    cls_agnostic_mask = pred_mask_logits.size(1) == 1
    mask_side_len = pred_mask_logits.size(2)
    gt_classes, gt_masks = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        gt_classes.append(inst.gt_classes.to(dtype=torch.int64))
        gt_masks.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, mask_side_len)
                        .to(device=pred_mask_logits.device))
    if len(gt_masks) == 0:
        return pred_mask_logits.sum() * 0
    gt_masks_t = cat(gt_masks, dim=0).to(dtype=torch.float32)
    classes = cat(gt_classes, dim=0)
    if loss_type == "softmax" and not cls_agnostic_mask:
        # Pixels outside the mask belong to no class; only the foreground
        # pixels compete across classes, and background is a separate zero logit.
        logits = torch.cat([pred_mask_logits, pred_mask_logits.new_zeros(pred_mask_logits[:, :1].shape)], dim=1)
        target = torch.where(gt_masks_t > 0.5, classes[:, None, None].expand_as(gt_masks_t),
                             torch.full_like(classes[:, None, None].expand_as(gt_masks_t), logits.shape[1] - 1))
        return F.cross_entropy(logits, target, reduction="mean")
    if cls_agnostic_mask:
        selected = pred_mask_logits[:, 0]
    else:
        selected = pred_mask_logits[torch.arange(pred_mask_logits.size(0), device=classes.device), classes]
    return F.binary_cross_entropy_with_logits(selected, gt_masks_t, reduction="mean")


def mask_rcnn_inference(pred_mask_logits: Tensor, pred_classes: Tensor, loss_type: str = "sigmoid") -> Tensor:
    """Mask probabilities of each detection's predicted class.

    pred_mask_logits: Tensor[D, K, M, M] (K = 1 when class-agnostic);
    pred_classes: Tensor[D] int64 -> Tensor[D, 1, M, M] in [0, 1].
    loss_type "sigmoid": sigmoid of the predicted class's logit; "softmax": the
    softmax across the K classes and the fixed zero background logit that the
    softmax loss was trained with, taken at the predicted class's channel.
    """
    if pred_mask_logits.size(1) == 1:
        return pred_mask_logits.sigmoid()
    if loss_type == "softmax":
        with_bg = torch.cat([pred_mask_logits, pred_mask_logits.new_zeros(pred_mask_logits[:, :1].shape)], dim=1)
        probs = F.softmax(with_bg, dim=1)
    else:
        probs = pred_mask_logits.sigmoid()
    indices = torch.arange(pred_mask_logits.size(0), device=pred_classes.device)
    return probs[indices, pred_classes][:, None]


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleHead(nn.Sequential):
    """num_conv 3x3 convolutions (mask_fcn1, ...), a 2x2 stride-2 transposed convolution
    (deconv) and a 1x1 predictor with one output per class (or one, class-agnostic)."""

    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, conv_dims: List[int], conv_norm: str = "",
                 loss_weight: float = 1.0, loss_type: str = "sigmoid"):
        super().__init__()
        if len(conv_dims) < 1:
            raise ValueError("conv_dims of MaskRCNNConvUpsampleHead needs at least the deconv's width")
        channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(channels, conv_dim, kernel_size=3, stride=1, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, conv_dim), activation=nn.ReLU(inplace=True))
            self.add_module(f"mask_fcn{k + 1}", conv)
            channels = conv_dim
        self.deconv = nn.ConvTranspose2d(channels, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.add_module("deconv_relu", nn.ReLU(inplace=True))
        self.predictor = nn.Conv2d(conv_dims[-1], num_classes, kernel_size=1, stride=1, padding=0)
        for name, layer in self.named_children():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and name != "predictor":
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)
        self.loss_weight = loss_weight
        self.loss_type = _checked_loss_type(loss_type)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "MaskRCNNConvUpsampleHead":
        m = cfg.MODEL.ROI_MASK_HEAD
        return cls(input_shape, num_classes=_num_mask_classes(cfg), conv_dims=[m.CONV_DIM] * (m.NUM_CONV + 1),
                   conv_norm=m.NORM, loss_type=m.get("LOSS_TYPE", "sigmoid"))

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> mask logits Tensor[R, K, 2S, 2S]."""
        for layer in self:
            x = layer(x)
        return x

    @torch.jit.unused
    def losses(self, mask_logits: Tensor, instances: List[Instances]) -> Dict[str, Tensor]:
        return {"loss_mask": mask_rcnn_loss(mask_logits, instances, self.loss_type) * self.loss_weight}


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNMLPHead(nn.Sequential):
    """The paper's multi-layer perceptron mask branch (its Table 2e ablation of the FCN head).

    The pooled features Tensor[R, C, S, S] are flattened and go through fully
    connected layers fc1, fc2, ... (each followed by ReLU), then a fully connected
    predictor with num_classes * M * M outputs, M = 2S: the FCN head's output size
    (28 x 28 for the usual 14 x 14 pooling). The paper's MLP is fc_dims [1024, 1024].
    Outputs, losses and inference are the FCN head's.
    """

    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, fc_dims: List[int],
                 loss_weight: float = 1.0, loss_type: str = "sigmoid"):
        super().__init__()
        if not (input_shape.height and input_shape.width):
            raise ValueError("MaskRCNNMLPHead needs the pooled feature size (input_shape height and width)")
        self.num_classes = num_classes
        self.mask_size = 2 * int(input_shape.height)
        self.add_module("flatten", nn.Flatten())
        in_features = input_shape.channels * input_shape.height * input_shape.width
        for k, fc_dim in enumerate(fc_dims):
            fc = nn.Linear(in_features, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)  # "c2_xavier_fill", as the box head's fc layers
            nn.init.constant_(fc.bias, 0)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU(inplace=True))
            in_features = fc_dim
        self.predictor = nn.Linear(in_features, num_classes * self.mask_size * self.mask_size)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)
        self.loss_weight = loss_weight
        self.loss_type = _checked_loss_type(loss_type)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "MaskRCNNMLPHead":
        m = cfg.MODEL.ROI_MASK_HEAD
        return cls(input_shape, num_classes=_num_mask_classes(cfg),
                   fc_dims=[m.get("FC_DIM", 1024)] * m.get("NUM_FC", 2), loss_type=m.get("LOSS_TYPE", "sigmoid"))

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> mask logits Tensor[R, K, 2S, 2S]."""
        for layer in self:
            x = layer(x)
        return x.reshape(x.shape[0], self.num_classes, self.mask_size, self.mask_size)

    @torch.jit.unused
    def losses(self, mask_logits: Tensor, instances: List[Instances]) -> Dict[str, Tensor]:
        return {"loss_mask": mask_rcnn_loss(mask_logits, instances, self.loss_type) * self.loss_weight}


def _num_mask_classes(cfg) -> int:
    """Mask channels: 1 with MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK, else one per class."""
    return 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES


def _checked_loss_type(loss_type: str) -> str:
    """loss_type if it is one of MASK_LOSS_TYPES, else ValueError.

    With a single mask channel the two are the same function: a softmax over
    one logit and the zero background logit is the sigmoid of that logit.
    """
    if loss_type not in MASK_LOSS_TYPES:
        raise ValueError(f"Mask loss type (MODEL.ROI_MASK_HEAD.LOSS_TYPE) must be 'sigmoid' or 'softmax', "
                         f"got {loss_type!r}")
    return loss_type


def build_mask_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Builds MODEL.ROI_MASK_HEAD.NAME."""
    return build_from_registry(ROI_MASK_HEAD_REGISTRY, cfg.MODEL.ROI_MASK_HEAD.NAME, cfg, input_shape)
