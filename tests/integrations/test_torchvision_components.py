"""Each torchvision-semantics component equals the torchvision function it reproduces, and torchvision
checkpoints (both key layouts, ImageNet backbones) convert into the right places.

Expected values come from torchvision itself: its AnchorGenerator, LevelMapper,
paste_masks_in_image, GeneralizedRCNNTransform, its own upgrade of old
state_dict layouts, and its ResNet-50's features.
"""
import zlib

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList as TvImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.poolers import LevelMapper

from mrcnn_plugin.checkpoint import DetectionCheckpointer, convert_torchvision, torchvision_detection_to_detectron2
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.integrations.torchvision import (TorchvisionAnchorGenerator, paste_masks_torchvision,
                                                   torchvision_box_levels, torchvision_resize)
from mrcnn_plugin.layers import ShapeSpec
from mrcnn_plugin.modeling import build_model
from mrcnn_plugin.modeling.backbone.resnet import build_resnet_backbone

torch.set_num_threads(2)


def test_anchors_equal_torchvision_anchor_generator():
    """Rounded cell anchors, and per-level strides taken from the padded input (61 px, not 64, for p6 of
    an 800-high input), give torchvision's anchors exactly, in the same order."""
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    reference = AnchorGenerator(sizes, ratios)
    ours = TorchvisionAnchorGenerator([list(s) for s in sizes], [list(ratios[0])], [4, 8, 16, 32, 64])
    padded_h, padded_w = 800, 1216
    features = [torch.zeros(1, 1, padded_h // s, padded_w // s) for s in (4, 8, 16, 32)]
    features.append(torch.zeros(1, 1, (features[-1].shape[-2] + 1) // 2, (features[-1].shape[-1] + 1) // 2))
    images = TvImageList(torch.zeros(1, 3, padded_h, padded_w), [(800, 1202)])
    expected = reference(images, features)[0]
    assert torch.equal(torch.cat(ours(features)), expected)


def test_pooling_levels_equal_torchvision_level_mapper():
    """The ROI pooling level of every box, including boxes at the level boundaries (sizes 112, 224,
    448 px and a hair either side), is torchvision's LevelMapper's."""
    g = torch.Generator().manual_seed(0)
    sides = torch.cat([torch.rand(500, generator=g) * 900 + 1,
                       torch.tensor([112.0, 224.0, 448.0, 111.99999, 224.00002, 447.9999, 56.0, 1e-3])])
    aspect = torch.rand(sides.shape[0], generator=g) * 3 + 0.3
    w, h = sides * aspect.sqrt(), sides / aspect.sqrt()
    boxes = torch.stack([torch.zeros_like(w) + 5, torch.zeros_like(h) + 7, w + 5, h + 7], dim=1)
    expected = LevelMapper(2, 5)([boxes[:300], boxes[300:]])
    assert torch.equal(torchvision_box_levels([boxes[:300], boxes[300:]], 2, 5, 224, 4), expected)


def test_mask_paste_equals_torchvision():
    """Masks pasted into the image (boxes inside, touching the border, tiny; clipped to the image as
    detections are) equal torchvision's paste_masks_in_image thresholded at 0.5."""
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(40, 1, 28, 28, generator=g)
    xy = torch.rand(40, 2, generator=g) * 260 - 30
    wh = torch.rand(40, 2, generator=g) * 120 + 0.2
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 240)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 200)
    expected = paste_masks_in_image(masks, boxes, (200, 240))[:, 0] > 0.5
    actual = paste_masks_torchvision(masks, boxes, (200, 240))
    assert actual.dtype == torch.bool
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("size", [(300, 451), (480, 640), (640, 97)])
def test_resize_equals_generalized_rcnn_transform(size):
    """torchvision_resize gives GeneralizedRCNNTransform's test-time image (same size, same pixels once
    normalised), for landscape, portrait and long-side-limited photos."""
    g = torch.Generator().manual_seed(2)
    photo = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = GeneralizedRCNNTransform(800, 1333, mean, std).eval()
    images, _ = transform([photo.float() / 255])
    expected_h, expected_w = images.image_sizes[0]
    ours = torchvision_resize(photo)
    assert tuple(ours.shape[-2:]) == (expected_h, expected_w)
    normalised = (ours - torch.tensor(mean).view(3, 1, 1) * 255) / (torch.tensor(std).view(3, 1, 1) * 255)
    torch.testing.assert_close(normalised, images.tensors[0, :, :expected_h, :expected_w], atol=2e-5, rtol=0)


def _old_layout(state_dict: dict) -> dict:
    """The key layout torchvision's `_version = 2` modules still upgrade (FPN blocks, RPN conv, mask head)."""
    renames = [(".fpn.inner_blocks.{}.0.", ".fpn.inner_blocks.{}."),
               (".fpn.layer_blocks.{}.0.", ".fpn.layer_blocks.{}.")]
    out = {}
    for key, value in state_dict.items():
        new = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            for src, dst in renames:
                new = new.replace(src.format(i), dst.format(i))
            new = new.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        out[new] = value
    return out


def test_old_torchvision_key_layout_converts_like_the_current_one(tmp_path):
    """A state_dict in the older layout, which torchvision itself still loads (through its version
    upgrade), converts to exactly the same detectron2 state_dict as the current layout; and
    DetectionCheckpointer reads such a bare torchvision file directly, filling the torchvision config's
    model completely."""
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    current = reference.state_dict()
    old = _old_layout(current)
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn1.weight" in old
    assert "backbone.fpn.inner_blocks.0.weight" in old
    maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).load_state_dict(old)  # torchvision accepts it
    from_current = torchvision_detection_to_detectron2(current)
    from_old = torchvision_detection_to_detectron2(old)
    assert from_current.keys() == from_old.keys()
    assert all(torch.equal(from_current[k], from_old[k]) for k in from_current)
    # Background moved: torchvision's row 0 is the last row here, its first 4 deltas are gone.
    cls = current["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(from_current["roi_heads.box_predictor.cls_score.weight"][-1], cls[0])
    assert from_current["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 90 * 4
    assert from_current["roi_heads.mask_head.predictor.weight"].shape[0] == 90

    torch.save(old, tmp_path / "maskrcnn_old_layout.pth")
    cfg = get_cfg()
    cfg.merge_from_file("configs/torchvision/mask_rcnn_R_50_FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    report = DetectionCheckpointer(model).load(str(tmp_path / "maskrcnn_old_layout.pth"))["load_report"]
    assert report.ok, report.table()
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(model.state_dict()[key], from_current[key])


def test_convert_torchvision_checks_the_kind(tmp_path):
    """Asking for a kind the file is not (a ResNet classifier as a Mask R-CNN) is an error saying what is
    missing, and unknown kinds are rejected."""
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, path)
    with pytest.raises(ValueError, match="not a torchvision mask_rcnn.*roi_heads.box_predictor"):
        convert_torchvision(str(path), str(tmp_path / "out.pth"), "mask_rcnn")
    with pytest.raises(ValueError, match="Unknown torchvision kind"):
        convert_torchvision(str(path), str(tmp_path / "out.pth"), "retinanet")


@pytest.mark.parametrize("bn_eps", [1e-5, 0.0])
def test_resnet50_weights_give_torchvision_features(tmp_path, bn_eps):
    """A torchvision ResNet-50 state_dict loads into the bottom-up ResNet by name (only the classifier
    fc.* is unused) and, with STRIDE_IN_1X1 False, computes torchvision's features: for an ImageNet
    classifier (nn.BatchNorm2d, eps 1e-5, read directly by DetectionCheckpointer) and for frozen norms
    with eps 0, as torchvision runs its released COCO detection weights (convert_torchvision with
    bn_eps=0.0). Small variances make the eps matter: ignoring it would change the features."""
    torch.manual_seed(0)
    reference = resnet50(weights=None).eval()
    state = reference.state_dict()
    for key, value in state.items():  # non-trivial statistics, so a misplaced one would show
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) * 1e-3 + 1e-6)
        elif key.endswith("running_mean") or (".bn" in key or "bn1" in key or "downsample.1" in key) and \
                key.endswith("bias"):
            value.copy_(0.1 * torch.randn(value.shape, generator=g))
        elif key.endswith("weight") and value.dim() == 1:
            value.copy_(0.03 * (1 + 0.1 * torch.randn(value.shape, generator=g)))
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = bn_eps
    torch.save(state, tmp_path / "resnet50.pth")
    path = tmp_path / "resnet50.pth"
    if bn_eps != 1e-5:
        convert_torchvision(str(path), str(tmp_path / "converted.pth"), "resnet", bn_eps=bn_eps)
        path = tmp_path / "converted.pth"

    cfg = get_cfg()
    cfg.merge_from_file("configs/torchvision/mask_rcnn_R_50_FPN.yaml")
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    report = DetectionCheckpointer(backbone).load(str(path))["load_report"]
    assert not report.missing and not report.shape_mismatches
    assert sorted(k for k, _ in report.unexpected) == ["fc.bias", "fc.weight"]

    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))))))
        actual = backbone(image)["res5"]
        for module in reference.modules():  # the same weights with the other eps
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 1e-5 if bn_eps == 0.0 else 0.0
        other_eps = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))))))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert (other_eps - expected).abs().max() > 1e-2 * expected.abs().max(), "eps should matter here"


@pytest.mark.parametrize("config", ["mask_rcnn_R_50_FPN", "keypoint_rcnn_R_50_FPN"])
def test_torchvision_configs_script(config):
    """The Torchvision* components compile with torch.jit.script as written; the scripted mask model
    gives the eager model's detections (small R18 variants with random weights)."""
    cfg = get_cfg()
    cfg.merge_from_file(f"configs/torchvision/{config}.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
                         "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [32, 32],
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", 20])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    scripted = torch.jit.script(model)
    image = torchvision_resize(torch.randint(0, 256, (3, 120, 90), dtype=torch.uint8,
                                             generator=torch.Generator().manual_seed(4)), 128, 200)
    with torch.no_grad():
        eager = model.inference([{"image": image, "height": 120, "width": 90}])[0]
        compiled = scripted([{"image": image, "height": torch.tensor(120), "width": torch.tensor(90)}])[0]
    assert set(compiled) == set(eager) and len(compiled["scores"]) == len(eager["scores"]) == 20
    if config.startswith("mask"):
        torch.testing.assert_close(compiled["pred_boxes"], eager["pred_boxes"], atol=1e-3, rtol=0)
        assert torch.equal(compiled["pred_classes"], eager["pred_classes"])
        assert torch.equal(compiled["pred_masks"], eager["pred_masks"])
