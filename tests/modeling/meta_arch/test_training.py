"""Training: every head produces a finite loss on a real COCO image, images without
annotations train, gradients reach the trainable weights, and a small model overfits
two images (its total loss falls).

The model here is small (ResNet-18 FPN, 64 channels, short side 320) so the test runs
in seconds; the heads and losses are the full Mask / Keypoint R-CNN ones.
"""
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detection_compare import assert_same_detections
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.structures import Boxes, Instances, Keypoints, PolygonMasks

SHORT_SIDE = 320
ALL_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_keypoint"}


def _small_cfg(num_classes: int, keypoints: bool):
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml" if keypoints
                        else "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.FPN.OUT_CHANNELS", 64,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 128, "MODEL.ROI_BOX_HEAD.FC_DIM", 256,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 64, "MODEL.ROI_HEADS.NUM_CLASSES", num_classes,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", 300,
    ])
    if keypoints:
        cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = [64] * 4
    return cfg


def _load(shared_dir, json_name: str, image_index: int, keypoints: bool) -> dict:
    """A coco-mini train image resized to SHORT_SIDE, BGR CHW uint8, with its annotations
    as ground-truth Instances (crowd regions left out; contiguous class ids)."""
    root = shared_dir / "data" / "coco-mini"
    coco = COCO(str(root / "annotations" / json_name))
    cat_ids = sorted(coco.getCatIds())
    contiguous = {c: i for i, c in enumerate(cat_ids)}
    img_ids = sorted(i for i in coco.getImgIds()
                     if any(not a["iscrowd"] and (not keypoints or a["num_keypoints"] > 0)
                            for a in coco.loadAnns(coco.getAnnIds(imgIds=i))))
    info = coco.loadImgs(img_ids[image_index])[0]
    image = Image.open(root / "train2017" / info["file_name"]).convert("RGB")
    scale = SHORT_SIDE / min(info["height"], info["width"])
    new_w, new_h = round(info["width"] * scale), round(info["height"] * scale)
    bgr = np.asarray(image.resize((new_w, new_h), Image.BILINEAR))[:, :, ::-1]
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
            if not a["iscrowd"] and a["bbox"][2] > 1 and a["bbox"][3] > 1]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32) * scale
    inst = Instances((new_h, new_w), gt_boxes=Boxes(boxes),
                     gt_classes=torch.tensor([contiguous[a["category_id"]] for a in anns]))
    if keypoints:
        kp = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32).view(len(anns), -1, 3)
        kp[:, :, :2] = (kp[:, :, :2] + 0.5) * scale  # COCO keypoints are pixel indices
        inst.gt_keypoints = Keypoints(kp)
    else:
        inst.gt_masks = PolygonMasks([[np.asarray(p) * scale for p in a["segmentation"]] for a in anns])
    return {"image": torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1))), "instances": inst,
            "height": info["height"], "width": info["width"]}


@pytest.fixture(scope="module")
def mask_model():
    torch.manual_seed(0)
    return build_model(_small_cfg(80, keypoints=False))


@pytest.fixture(scope="module")
def keypoint_model():
    torch.manual_seed(0)
    return build_model(_small_cfg(1, keypoints=True))


def test_mask_rcnn_step_gives_finite_losses_and_gradients(mask_model, shared_dir):
    """One step on a real COCO image: all box/mask losses present, finite and positive, and
    every trainable parameter of the heads gets a gradient."""
    model = mask_model.train()
    batch = [_load(shared_dir, "instances_train2017.json", 0, keypoints=False)]
    assert len(batch[0]["instances"]) > 0
    losses = model(batch)
    assert set(losses) == ALL_LOSSES - {"loss_keypoint"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, (name, value)
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad and name.startswith(("roi_heads.", "proposal_generator.")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_keypoint_rcnn_step_gives_finite_losses(keypoint_model, shared_dir):
    """One step on a real COCO person image: RPN, box and keypoint losses finite and positive."""
    model = keypoint_model.train()
    batch = [_load(shared_dir, "person_keypoints_train2017.json", 0, keypoints=True)]
    losses = model(batch)
    assert set(losses) == ALL_LOSSES - {"loss_mask"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() > 0, (name, value)


def test_image_without_annotations_trains(mask_model, shared_dir):
    """An image with no instances (all background) gives finite losses, zero for the
    foreground-only terms, and can be batched with an annotated image."""
    model = mask_model.train()
    empty = _load(shared_dir, "instances_train2017.json", 1, keypoints=False)
    empty["instances"] = empty["instances"][torch.zeros(len(empty["instances"]), dtype=torch.bool)]
    losses = model([empty])
    for name, value in losses.items():
        assert torch.isfinite(value), name
    assert losses["loss_mask"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_rpn_loc"].item() == 0 and losses["loss_cls"].item() > 0
    both = model([empty, _load(shared_dir, "instances_train2017.json", 0, keypoints=False)])
    sum(both.values()).backward()


def test_overfits_two_images(shared_dir):
    """50 SGD steps on the same 2 images drive the total loss well below where it started."""
    torch.manual_seed(0)
    model = build_model(_small_cfg(80, keypoints=False)).train()
    batch = [_load(shared_dir, "instances_train2017.json", i, keypoints=False) for i in (2, 3)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    history = []
    for _ in range(50):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        history.append(total.item())
    first, last = np.mean(history[:5]), np.mean(history[-5:])
    assert np.isfinite(history).all()
    assert last < 0.5 * first, f"total loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("overrides", [
    ["MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", True],
    ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True],
    ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool", "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIPool"],
    ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlign", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2],
    ["INPUT.MASK_FORMAT", "bitmask"],
    ["MODEL.ROI_BOX_HEAD.NUM_CONV", 2, "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.NORM", "GN"],
], ids=["agnostic-mask", "agnostic-box", "roipool", "roialign-v1", "bitmask-targets", "conv-gn-box-head"])
def test_head_variants_train_and_script(overrides, shared_dir):
    """Each head variant of the config trains one step with finite losses, and its inference
    path scripts and matches eager (up to the float rounding of the scripted ATen-only ops)."""
    cfg = _small_cfg(80, keypoints=False)
    cfg.merge_from_list(overrides)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    sample = _load(shared_dir, "instances_train2017.json", 0, keypoints=False)
    if cfg.INPUT.MASK_FORMAT == "bitmask":
        from mrcnn_plugin.structures import BitMasks, polygons_to_bitmask

        inst = sample["instances"]
        h, w = inst.image_size
        inst.gt_masks = BitMasks(np.stack([polygons_to_bitmask(p, h, w) for p in inst.gt_masks.polygons]))
    losses = model([sample])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()

    model.eval()
    # An untrained classifier scores every class about 1/81: keep them all, so the
    # comparison below has detections (and masks) to compare.
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
        assert model.roi_heads.mask_head.predictor.out_channels == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    inputs = [{"image": sample["image"]}]
    with torch.no_grad():
        expected, got = model.inference(inputs)[0], scripted(inputs)[0]
    assert_same_detections(got, expected)
