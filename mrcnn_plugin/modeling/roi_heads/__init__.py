"""ROI heads and the box, mask and keypoint heads they run."""
from .box_head import FastRCNNConvFCHead, build_box_head
from .fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference_single_image
from .keypoint_head import KRCNNConvDeconvUpsampleHead, build_keypoint_head, heatmaps_to_keypoints, keypoint_rcnn_loss
from .mask_head import MaskRCNNConvUpsampleHead, MaskRCNNMLPHead, build_mask_head, mask_rcnn_inference, mask_rcnn_loss
from .roi_heads import (ROIHeads, Res5ROIHeads, StandardROIHeads, add_ground_truth_to_proposals, build_roi_heads,
                        select_foreground_proposals, select_proposals_with_visible_keypoints)

__all__ = [k for k in dir() if not k.startswith("_")]
