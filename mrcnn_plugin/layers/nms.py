"""Non-maximum suppression."""
from torch import Tensor
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms

__all__ = ["nms", "batched_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """boxes: Tensor[N, 4] XYXY; scores: Tensor[N] -> kept indices Tensor[K], by decreasing score."""
    return tv_nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently within each group of `idxs` (class or pyramid level).

    boxes: Tensor[N, 4] XYXY; scores: Tensor[N]; idxs: Tensor[N] int64
    -> kept indices Tensor[K], by decreasing score.
    """
    return tv_batched_nms(boxes.float(), scores, idxs, iou_threshold)
