"""Default configuration: detectron2's key names and default values.

`_C` holds every detectron2 key that this plugin reads, with detectron2's own
default (not the value a model-zoo YAML sets), so that merging one of
detectron2's YAML files gives exactly the config detectron2 would build.

Detectron2 keys for features this plugin does not implement (RetinaNet,
panoptic FPN, cascade heads, deformable convolutions, ...) are not in `_C`;
they are listed in `UNUSED_DETECTRON2_DEFAULTS` so that YAML files written for
detectron2 still load: `CfgNode.merge_from_file` drops them with one warning.

Naming convention (detectron2's): a value that differs between training and
inference is suffixed `_TRAIN` or `_TEST`.
"""

from typing import Any, Dict, FrozenSet

# fvcore's node, not config.CfgNode: config.py imports these defaults, so they must not import
# it back; get_cfg() converts the tree into config.CfgNode.
from fvcore.common.config import CfgNode as CN

_C = CN()

# Config format version. detectron2 is at 2; older versions are not converted.
_C.VERSION = 2

# Python modules imported before a model is built, so that third-party
# components can register themselves by name (plugin-specific key, not in
# detectron2).
_C.PLUGINS = []

# -----------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.MASK_ON = False
_C.MODEL.KEYPOINT_ON = False
_C.MODEL.DEVICE = "cuda"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Lay convolution weights out channels-last (NHWC), so that every feature map
# is NHWC too (plugin-specific key). Same arithmetic; oneDNN's NHWC
# convolutions and their backward pass are faster on CPU, and ROIAlign reads
# NHWC features without a copy. False keeps PyTorch's NCHW default.
_C.MODEL.CHANNELS_LAST = True
# Checkpoint to load: a path or URL (detectron2://, https://, ...). Empty = none.
_C.MODEL.WEIGHTS = ""
# Normalisation of input pixels, in the channel order of INPUT.FORMAT.
# The mean is ImageNet's; std is 1 because MSRA-pretrained ResNets fold the
# std into conv1 (use [57.375, 57.120, 58.395] for torchvision/C2 weights).
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

# -----------------------------------------------------------------------------
# Input
# -----------------------------------------------------------------------------
_C.INPUT = CN()
# Shortest-edge sizes to resize training images to; one is picked per image
# ("choice"), or a size is drawn from the [min, max] range ("range").
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Shortest-edge size at inference; 0 disables resizing.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Training flip augmentation: "horizontal", "vertical" or "none".
_C.INPUT.RANDOM_FLIP = "horizontal"
# Random crop augmentation at training time.
_C.INPUT.CROP = CN({"ENABLED": False})
# "relative_range", "relative", "absolute" or "absolute_range"; SIZE is a
# fraction of the image for the relative types and pixels otherwise.
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# Channel order the model expects.
_C.INPUT.FORMAT = "BGR"
# Ground-truth mask representation: "polygon" or "bitmask".
_C.INPUT.MASK_FORMAT = "polygon"

# -----------------------------------------------------------------------------
# Datasets (names registered in the dataset catalog)
# -----------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()

# -----------------------------------------------------------------------------
# Data loader
# -----------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Batch portrait and landscape images separately (less padding).
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
# "TrainingSampler" or "RepeatFactorTrainingSampler".
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
# Parameters of the repeat-factor sampler (LVIS-style class rebalancing).
_C.DATALOADER.REPEAT_THRESHOLD = 0.0
_C.DATALOADER.REPEAT_SQRT = True
# Drop training images that have no instance annotation.
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# -----------------------------------------------------------------------------
# Backbone
# -----------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# Number of leading stages (stem = 1, res2 = 2, ...) whose weights are frozen.
_C.MODEL.BACKBONE.FREEZE_AT = 2

# -----------------------------------------------------------------------------
# FPN
# -----------------------------------------------------------------------------
_C.MODEL.FPN = CN()
# Backbone outputs fed to FPN, with strides doubling from one to the next.
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
# "" (none) or "GN".
_C.MODEL.FPN.NORM = ""
# How top-down and lateral features are combined: "sum" or "avg".
_C.MODEL.FPN.FUSE_TYPE = "sum"

# -----------------------------------------------------------------------------
# Proposal generator
# -----------------------------------------------------------------------------
_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals whose width or height is not above this (input pixels) are dropped.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

# -----------------------------------------------------------------------------
# Anchor generator
# -----------------------------------------------------------------------------
_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
# Anchor sizes (sqrt of area, input pixels): one list per feature map, or a
# single list shared by all of them.
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
# Anchor aspect ratios (height / width), same per-map convention as SIZES.
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Position of the first anchor centre, as a fraction of the stride, in [0, 1).
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

# -----------------------------------------------------------------------------
# RPN
# -----------------------------------------------------------------------------
_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
_C.MODEL.RPN.IN_FEATURES = ["res4"]
# Anchors reaching this many pixels beyond the image are ignored in training;
# a negative value keeps every anchor.
_C.MODEL.RPN.BOUNDARY_THRESH = -1
# Anchor labelling by IoU with ground truth: below 0.3 negative (0), from 0.7
# positive (1), in between ignored (-1).
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]
# Anchors sampled per image for the loss, and the share of positives.
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# "smooth_l1" or "giou".
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0
# Scaling of the (dx, dy, dw, dh) regression targets.
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Smooth-L1 transition point; 0 gives plain L1.
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.LOSS_WEIGHT = 1.0
# Top-scoring anchors kept before NMS (per feature map with FPN).
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
# Proposals kept after NMS, per image.
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Channels of the RPN head's hidden convs; -1 means "same as the input".
_C.MODEL.RPN.CONV_DIMS = [-1]

# -----------------------------------------------------------------------------
# ROI heads
# -----------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
# Foreground classes (background is added internally, as the last class).
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
# Feature maps pooled by every ROI head (box, mask, keypoint).
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
# Proposal labelling by IoU: below 0.5 background, from 0.5 foreground.
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
# Proposals sampled per image for the losses, and the share of foreground.
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference: minimum class score, and IoU of the per-class NMS.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
# Add the ground-truth boxes to the proposals before sampling (training).
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

# -----------------------------------------------------------------------------
# Box head
# -----------------------------------------------------------------------------
_C.MODEL.ROI_BOX_HEAD = CN()
# Empty for C4 models, whose box head is the res5 stage.
_C.MODEL.ROI_BOX_HEAD.NAME = ""
# "smooth_l1" or "giou".
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
# Scaling of the (dx, dy, dw, dh) targets, chosen for roughly unit variance.
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
# 0 = adaptive number of samples per bin.
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
# "ROIAlignV2" is ROIAlign with aligned=True (half-pixel correction).
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
# How ROIAlign reduces the bilinear samples of a bin: "avg" (detectron2's
# and the paper's choice) or "max" (the paper's Table 2c ablation). ROIPool
# always takes the max over its quantized bins. Plugin-specific key.
_C.MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION = "avg"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
# "" (none), "GN" or "SyncBN".
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
# Feed the box head's own refined boxes (not the proposals) to the other heads.
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False
# Per-class sigmoid cross-entropy instead of softmax for classification.
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False

# -----------------------------------------------------------------------------
# Mask head
# -----------------------------------------------------------------------------
_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
# Convs before the upsampling deconv.
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
# One mask for all classes instead of one per class.
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
# "avg" or "max" over each ROIAlign bin's samples (see ROI_BOX_HEAD).
_C.MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION = "avg"
# Mask loss: "sigmoid" (per-class binary cross entropy, the paper's) or
# "softmax" (per-pixel cross entropy across the classes and a background, the
# paper's "multinomial" ablation); inference uses the matching probabilities.
# Plugin-specific key.
_C.MODEL.ROI_MASK_HEAD.LOSS_TYPE = "sigmoid"
# Fully connected layers of the "MaskRCNNMLPHead" mask head (the paper's MLP
# ablation), before its predictor. Plugin-specific keys.
_C.MODEL.ROI_MASK_HEAD.NUM_FC = 2
_C.MODEL.ROI_MASK_HEAD.FC_DIM = 1024

# -----------------------------------------------------------------------------
# Keypoint head
# -----------------------------------------------------------------------------
_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "KRCNNConvDeconvUpsampleHead"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = tuple([512] * 8)
# 17 = COCO person keypoints.
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
# Training images with fewer visible keypoints than this are skipped.
_C.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 1
# True: divide the loss by the visible keypoints of the batch; False: by all
# keypoints a full batch could have (then LOSS_WEIGHT 4.0 is the usual value).
_C.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = True
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"
# "avg" or "max" over each ROIAlign bin's samples (see ROI_BOX_HEAD).
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION = "avg"

# -----------------------------------------------------------------------------
# ResNet / ResNeXt (backbone, and the res5 box head of C4 models)
# -----------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
# ["res4"] for C4 models, ["res2", "res3", "res4", "res5"] for FPN.
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
# 1 = ResNet, > 1 = ResNeXt.
_C.MODEL.RESNETS.NUM_GROUPS = 1
# "FrozenBN", "BN", "SyncBN" or "GN".
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Stride 2 on the first 1x1 conv of a block (MSRA weights) instead of the 3x3
# (Caffe2 / torchvision weights).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# 2 = dilated res5 with stride 16 (the DC5 models).
_C.MODEL.RESNETS.RES5_DILATION = 1
# Output channels of res2 (64 for R18/R34) and of the stem.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64

# -----------------------------------------------------------------------------
# Solver
# -----------------------------------------------------------------------------
_C.SOLVER = CN()
# "WarmupMultiStepLR", "WarmupCosineLR" or "WarmupStepWithFixedGammaLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
# Final learning rate of the cosine schedule.
_C.SOLVER.BASE_LR_END = 0.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
# Weight decay of normalisation layers' affine parameters.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
# Learning rate multiplier at each step of the multi-step schedule.
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (30000,)
# Number of decays of the fixed-gamma step schedule.
_C.SOLVER.NUM_DECAYS = 3
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
# "linear" or "constant".
_C.SOLVER.WARMUP_METHOD = "linear"
# Fixed-gamma schedule: rescale the decay interval after warmup.
_C.SOLVER.RESCALE_INTERVAL = False
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Images per iteration summed over all workers.
_C.SOLVER.IMS_PER_BATCH = 16
# Bias learning rate factor and weight decay (None = WEIGHT_DECAY); they exist
# to reproduce Detectron1 training.
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.WEIGHT_DECAY_BIAS = None
_C.SOLVER.CLIP_GRADIENTS = CN({"ENABLED": False})
# "value": clamp each gradient element; "norm": clip each parameter's norm;
# "full_model": clip the norm of all gradients together.
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
# p of the L-p norm for "norm" clipping (.inf for the max norm).
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Mixed-precision training (inference is unaffected).
_C.SOLVER.AMP = CN({"ENABLED": False})

# -----------------------------------------------------------------------------
# Test
# -----------------------------------------------------------------------------
_C.TEST = CN()
# Accuracy checks after evaluation: [[task, metric, value, tolerance], ...].
_C.TEST.EXPECTED_RESULTS = []
# Evaluate every this many iterations during training; 0 disables.
_C.TEST.EVAL_PERIOD = 0
# Per-keypoint OKS sigmas for evaluation; empty = COCO's.
_C.TEST.KEYPOINT_OKS_SIGMAS = []
_C.TEST.DETECTIONS_PER_IMAGE = 100
# Test-time augmentation (multi-scale and flip) at evaluation: each image is
# run at every short side in MIN_SIZES (long side at most MAX_SIZE) and, with
# FLIP, mirrored too; boxes are merged by per-class NMS and masks averaged
# (modeling/test_time_augmentation.py). Evaluated after training and with
# --eval-only, results reported as "bbox_TTA" / "segm_TTA".
_C.TEST.AUG = CN({"ENABLED": False})
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)
_C.TEST.AUG.MAX_SIZE = 4000
_C.TEST.AUG.FLIP = True

# -----------------------------------------------------------------------------
# Miscellaneous
# -----------------------------------------------------------------------------
_C.OUTPUT_DIR = "./output"
# Negative = a different random seed each run.
_C.SEED = -1
_C.CUDNN_BENCHMARK = False
# Visualise training samples every this many iterations; 0 disables.
_C.VIS_PERIOD = 0


# -----------------------------------------------------------------------------
# detectron2 keys that this plugin does not implement
# -----------------------------------------------------------------------------
# Full dotted key -> detectron2's default. Files written for detectron2 set
# many of these (every full config dump does); they are accepted, dropped and
# reported once in a warning instead of failing the whole file.
UNUSED_DETECTRON2_DEFAULTS: Dict[str, Any] = {
    # Pre-computed proposals (Fast R-CNN) instead of an RPN.
    "MODEL.LOAD_PROPOSALS": False,
    "DATASETS.PROPOSAL_FILES_TRAIN": (),
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": 2000,
    "DATASETS.PROPOSAL_FILES_TEST": (),
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": 1000,
    # Rotated anchors (RRPN).
    "MODEL.ANCHOR_GENERATOR.ANGLES": [[-90, 0, 90]],
    # Deformable convolutions in ResNet.
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.RESNETS.DEFORM_MODULATED": False,
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": 1,
    # Federated loss (LVIS).
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": False,
    "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER": 0.5,
    "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES": 50,
    # Cascade R-CNN.
    "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS": (
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    ),
    "MODEL.ROI_BOX_CASCADE_HEAD.IOUS": (0.5, 0.6, 0.7),
    # Semantic segmentation and panoptic FPN.
    "MODEL.SEM_SEG_HEAD.NAME": "SemSegFPNHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 54,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0,
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT": 1.0,
    "MODEL.PANOPTIC_FPN.COMBINE.ENABLED": True,
    "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH": 0.5,
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": 4096,
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 0.5,
    # RetinaNet.
    "MODEL.RETINANET.NUM_CLASSES": 80,
    "MODEL.RETINANET.IN_FEATURES": ["p3", "p4", "p5", "p6", "p7"],
    "MODEL.RETINANET.NUM_CONVS": 4,
    "MODEL.RETINANET.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.RETINANET.IOU_LABELS": [0, -1, 1],
    "MODEL.RETINANET.PRIOR_PROB": 0.01,
    "MODEL.RETINANET.SCORE_THRESH_TEST": 0.05,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 1000,
    "MODEL.RETINANET.NMS_THRESH_TEST": 0.5,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0),
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": 2.0,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": 0.25,
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.1,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RETINANET.NORM": "",
    # Trainer features not provided: automatic rescaling of the batch size
    # and learning rate to the number of workers, precise BN statistics.
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "TEST.PRECISE_BN.ENABLED": False,
    "TEST.PRECISE_BN.NUM_ITER": 200,
    # Global switches: TF32 matmul precision, and a scratch value for hacks.
    "FLOAT32_PRECISION": "",
    "GLOBAL.HACK": 1.0,
}

UNUSED_DETECTRON2_KEYS: FrozenSet[str] = frozenset(UNUSED_DETECTRON2_DEFAULTS)

# -----------------------------------------------------------------------------
# Keys of `_C` that detectron2 does not have
# -----------------------------------------------------------------------------
# A config built by detectron2 itself lacks them, so the code that reads them
# falls back to these defaults (`node.get(KEY, default)`).
PLUGIN_KEYS: FrozenSet[str] = frozenset({
    "PLUGINS",
    "MODEL.CHANNELS_LAST",
    "MODEL.ROI_BOX_HEAD.POOLER_BIN_REDUCTION",
    "MODEL.ROI_MASK_HEAD.POOLER_BIN_REDUCTION",
    "MODEL.ROI_MASK_HEAD.LOSS_TYPE",
    "MODEL.ROI_MASK_HEAD.NUM_FC",
    "MODEL.ROI_MASK_HEAD.FC_DIM",
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_BIN_REDUCTION",
})
