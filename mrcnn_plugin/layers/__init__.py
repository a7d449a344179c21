"""Building blocks shared by the backbone and the heads."""
from .batch_norm import FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm
from .nms import batched_nms, nms
from .roi_align import ROIAlign, ROIPool
from .winograd import WinogradConv2d, WinogradConvStack, winograd_supported
from .wrappers import Conv2d, ShapeSpec, cat

__all__ = ["FrozenBatchNorm2d", "NaiveSyncBatchNorm", "get_norm", "batched_nms", "nms", "ROIAlign",
           "ROIPool", "Conv2d", "ShapeSpec", "WinogradConv2d", "WinogradConvStack", "cat", "winograd_supported"]
