"""A tiny Mask / Keypoint R-CNN and a synthetic annotated image, for tests that train a step,
script and compare variants in a couple of seconds on CPU (no data files needed).

The architecture is the real one (ResNet-18 FPN, RPN, box / mask / keypoint heads) with
narrow layers; weights are random, so detections are arbitrary but deterministic.
"""
from typing import List, Sequence

import numpy as np
import torch

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.structures import Boxes, Instances, Keypoints, PolygonMasks

IMAGE_HW = (96, 128)
NUM_CLASSES = 3


def tiny_cfg(overrides: Sequence = (), keypoints: bool = False, c4: bool = False):
    """A ResNet-18 FPN (or C4) Mask R-CNN config with small widths; `overrides` merged last."""
    cfg = get_cfg()
    if c4:
        cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml")
    elif keypoints:
        cfg.merge_from_file("configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml")
    else:
        cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.ROI_HEADS.NUM_CLASSES", 1 if keypoints else NUM_CLASSES, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.FC_DIM", 32,
    ])
    if not c4:
        cfg.merge_from_list(["MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64])
    if keypoints:
        cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = [16, 16]
    cfg.merge_from_list(list(overrides))
    return cfg


def tiny_mask_cfg():
    """A small random Mask R-CNN (ResNet-18 FPN, 128 px test size) with one class, so that its
    random scores pass the 0.05 threshold and every image has detections to compare."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_HEADS.NUM_CLASSES", 1,
        "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
        "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 224, "TEST.DETECTIONS_PER_IMAGE", 10,
    ])
    return cfg


def synthetic_image(seed: int = 0) -> torch.Tensor:
    """A smooth random BGR uint8 image Tensor[3, 96, 128] (low-frequency noise, so that
    features vary slowly as in a photo)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g) * 255
    image = torch.nn.functional.interpolate(coarse, size=IMAGE_HW, mode="bilinear", align_corners=False)[0]
    return image.round().to(torch.uint8)


def synthetic_sample(seed: int = 0, keypoints: bool = False) -> dict:
    """A training input: the synthetic image with two annotated objects (boxes, classes,
    polygon masks, and 17 visible keypoints each when `keypoints`)."""
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 30.0, 120.0, 90.0]])
    inst = Instances(IMAGE_HW, gt_boxes=Boxes(boxes),
                     gt_classes=torch.tensor([0, 0] if keypoints else [1, 2]))
    polygons: List[List[np.ndarray]] = []
    for x0, y0, x1, y1 in boxes.tolist():
        polygons.append([np.array([x0, y0, x1, y0, (x0 + x1) / 2, y1])])  # a triangle in the box
    inst.gt_masks = PolygonMasks(polygons)
    if keypoints:
        g = torch.Generator().manual_seed(seed)
        kp = torch.zeros(2, 17, 3)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            kp[i, :, 0] = x0 + torch.rand(17, generator=g) * (x1 - x0)
            kp[i, :, 1] = y0 + torch.rand(17, generator=g) * (y1 - y0)
        kp[:, :, 2] = 2
        inst.gt_keypoints = Keypoints(kp)
    return {"image": synthetic_image(seed), "instances": inst}
