"""The model: backbone, proposal generator, ROI heads and the meta-architecture that joins them."""
from .anchor_generator import DefaultAnchorGenerator, build_anchor_generator
from .backbone import FPN, Backbone, ResNet, build_backbone
from .box_regression import Box2BoxTransform
from .matcher import Matcher
from .meta_arch import GeneralizedRCNN, build_model
from .poolers import ROIPooler
from .postprocessing import detector_postprocess, paste_masks_in_image
from .proposal_generator import RPN, StandardRPNHead, build_proposal_generator
from .roi_heads import (FastRCNNConvFCHead, FastRCNNOutputLayers, KRCNNConvDeconvUpsampleHead,
                        MaskRCNNConvUpsampleHead, Res5ROIHeads, ROIHeads, StandardROIHeads, build_roi_heads)
from .sampling import subsample_labels

__all__ = [k for k in dir() if not k.startswith("_")]
