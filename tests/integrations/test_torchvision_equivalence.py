"""Converted torchvision Mask / Keypoint R-CNN weights give torchvision's own detections on real photos.

torchvision's `maskrcnn_resnet50_fpn` and `keypointrcnn_resnet50_fpn` are built
untrained (weights=None, weights_backbone=None) and given seeded random weights
(`_seeded_weights`: every tensor drawn from a generator seeded with its key;
convolutions and linear layers N(0, 1/fan_in), batch-norm statistics and
affine parameters random around the identity, so a swapped or misplaced
statistic would show). Three scalings keep random weights informative:

- `cls_score` x2 spreads the class probabilities, so torchvision's own
  box_score_thresh (0.05) keeps the full 100 detections per image;
- `bbox_pred` of the RPN and of the box head x0.2 keeps box deltas in a
  trained model's range (unscaled random deltas stretch boxes by exp(several)
  and amplify float32 rounding into ~5e-3 px);
- `mask_fcn_logits` x50 moves mask probabilities away from 0.5, where random
  logits otherwise sit and where float32 noise (~1e-4) flips border pixels.

torchvision takes the original photo (0-1 float, RGB) and resizes it itself;
this model takes `torchvision_resize(photo)` with the photo's original size as
height / width. To keep the test fast both sides resize to a short side of 512
(long side at most 853) instead of the configs' 800 / 1333, and the keypoint
model keeps 40 detections per image (its head is the costly part).

Expected values are torchvision's outputs; tolerances are the issue's: boxes
0.01 px, scores 1e-4, same classes (class i here = torchvision label i + 1),
pasted masks IoU > 0.99, keypoints 0.01 px.
"""
import math
import zlib

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torchvision.models.detection import keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

from mrcnn_plugin.checkpoint import DetectionCheckpointer, convert_torchvision
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.integrations.torchvision import torchvision_resize
from mrcnn_plugin.modeling import build_model

BOX_TOL = 0.01
SCORE_TOL = 1e-4
MIN_MASK_IOU = 0.99
KEYPOINT_TOL = 0.01

MIN_SIZE, MAX_SIZE = 512, 853
# kind -> (torchvision builder, config, photos compared, detections per image)
MODELS = {
    "mask_rcnn": (maskrcnn_resnet50_fpn, "configs/torchvision/mask_rcnn_R_50_FPN.yaml",
                  ("astronaut", "coco_000000000139"), 100),
    "keypoint_rcnn": (keypointrcnn_resnet50_fpn, "configs/torchvision/keypoint_rcnn_R_50_FPN.yaml",
                      ("coffee", "coco_000000183709"), 40),
}
GAINS = {"cls_score.weight": 2.0, "bbox_pred.weight": 0.2, "mask_fcn_logits.weight": 50.0}


def _is_norm(key: str) -> bool:
    return ".bn" in key or "downsample.1." in key


def _seeded_weights(state_dict: dict) -> dict:
    """Random weights, each tensor from a generator seeded with its key (see the module docstring)."""
    out = {}
    for key, like in state_dict.items():
        if not like.is_floating_point():
            out[key] = like.clone()
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = tuple(like.shape)
        if _is_norm(key) and key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif _is_norm(key) and key.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif _is_norm(key):  # bias, running_mean
            t = 0.1 * torch.randn(shape, generator=g)
        elif like.dim() <= 1:
            t = 0.01 * torch.randn(shape, generator=g)
        else:
            # A transposed convolution's weight is [in, out, k, k]: its fan-in is numel / out.
            fan_dim = 1 if ("conv5_mask" in key or "kps_score_lowres" in key) else 0
            t = torch.randn(shape, generator=g) * math.sqrt(shape[fan_dim] / like.numel())
            t = t * GAINS.get(key.rsplit(".", 2)[-2] + "." + key.rsplit(".", 1)[-1], 1.0)
        out[key] = t.to(like.dtype)
    return out


def _photo(name: str, shared_dir) -> torch.Tensor:
    """A real photo as uint8 Tensor[3, H, W], RGB: scikit-image's bundled ones or coco-mini's."""
    if name.startswith("coco_"):
        path = shared_dir / "data" / "coco-mini" / "val2017" / f"{name[len('coco_'):]}.jpg"
        array = np.asarray(Image.open(path).convert("RGB"))
    else:
        array = getattr(skimage.data, name)()
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module", params=list(MODELS))
def converted_pair(request, tmp_path_factory):
    """(kind, torchvision model, this package's model loaded from the converted file, load report)."""
    torch.set_num_threads(2)
    kind = request.param
    builder, config, _, detections = MODELS[kind]
    reference = builder(weights=None, weights_backbone=None, min_size=MIN_SIZE, max_size=MAX_SIZE,
                        box_detections_per_img=detections).eval()
    reference.load_state_dict(_seeded_weights(reference.state_dict()))
    folder = tmp_path_factory.mktemp(kind)
    torch.save(reference.state_dict(), folder / "torchvision.pth")
    # Untrained torchvision builders use nn.BatchNorm2d (eps 1e-5), not the eps-0 frozen norms of the
    # released COCO weights that convert_torchvision assumes by default.
    convert_torchvision(str(folder / "torchvision.pth"), str(folder / "converted.pth"), kind, bn_eps=1e-5)
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    model = build_model(cfg).eval()
    report = DetectionCheckpointer(model).load(str(folder / "converted.pth"))["load_report"]
    return kind, reference, model, report


def test_converted_checkpoint_fills_every_parameter(converted_pair):
    """The converted file loads with nothing missing, unused or mis-shaped, into the model that
    configs/torchvision/*.yaml builds."""
    _, _, model, report = converted_pair
    assert report.ok, report.table()
    assert report.loaded == len(model.state_dict())


def _mask_ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU per pair of bool masks Tensor[N, H, W]; 1 where both are empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@pytest.mark.parametrize("photo_index", [0, 1])
def test_same_detections_as_torchvision(converted_pair, photo_index, shared_dir):
    """Boxes, classes, scores, pasted masks and keypoints equal torchvision's on a real photo,
    detection by detection in score order."""
    kind, reference, model, _ = converted_pair
    name = MODELS[kind][2][photo_index]
    photo = _photo(name, shared_dir)
    height, width = photo.shape[-2:]
    with torch.no_grad():
        expected = reference([photo.float() / 255.0])[0]
        image = torchvision_resize(photo, MIN_SIZE, MAX_SIZE)
        actual = model.inference([{"image": image, "height": height, "width": width}])[0]

    n = len(expected["scores"])
    assert n == MODELS[kind][3], f"{kind} {name}: {n} detections, fewer than the maximum"
    assert len(actual["scores"]) == n
    assert torch.equal(actual["pred_classes"] + 1, expected["labels"])
    box_err = (actual["pred_boxes"] - expected["boxes"]).abs().max().item()
    score_err = (actual["scores"] - expected["scores"]).abs().max().item()
    line = f"[{kind} / {name} {height}x{width}] {n} detections: max |box| {box_err:.2e} px, max |score| {score_err:.2e}"
    assert box_err < BOX_TOL and score_err < SCORE_TOL, line
    if "masks" in expected:
        ious = _mask_ious(actual["pred_masks"], expected["masks"][:, 0] > 0.5)
        area = actual["pred_masks"].flatten(1).sum(1).float().mean().item()
        line += f", min mask IoU {ious.min().item():.5f} (mean mask area {area:.0f} px)"
        assert ious.min().item() > MIN_MASK_IOU, line
    if "keypoints" in expected:
        kp_err = (actual["pred_keypoints"][..., :2] - expected["keypoints"][..., :2]).abs().max().item()
        line += f", max |keypoint| {kp_err:.2e} px"
        assert kp_err < KEYPOINT_TOL, line
    print(line)
