"""The detectron2 bridge, against a stand-in for detectron2 (which is not installable here).

The stand-in has what detectron2's calling convention relies on: fvcore
registries under detectron2's names, builders called as `(cfg)` /
`(cfg, input_shape)`, its own ShapeSpec (a namedtuple, as in older detectron2),
its own Boxes / PolygonMasks / Instances classes (duck-typed, not this
package's), and a meta-architecture that calls backbone, proposal generator
and ROI heads the way detectron2's GeneralizedRCNN does. The config is a
detectron2-style config (this package's get_cfg has detectron2's keys).
"""
from collections import namedtuple

import pytest
import torch
from fvcore.common.registry import Registry
from torch import nn

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.integrations.detectron2 import PREFIX, REGISTRY_NAMES, register
from mrcnn_plugin.structures import ImageList

D2ShapeSpec = namedtuple("D2ShapeSpec", ["channels", "height", "width", "stride"], defaults=[None] * 4)


class D2Boxes:
    """Stand-in for detectron2.structures.Boxes."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __len__(self):
        return self.tensor.shape[0]


class D2PolygonMasks:
    """Stand-in for detectron2.structures.PolygonMasks."""

    def __init__(self, polygons):
        self.polygons = polygons

    def __len__(self):
        return len(self.polygons)


class D2Instances:
    """Stand-in for detectron2.structures.Instances (the interface the bridge reads)."""

    def __init__(self, image_size, **fields):
        self.image_size = image_size
        self._fields = dict(fields)

    def get_fields(self):
        return self._fields

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._fields:
            raise AttributeError(name)
        return self._fields[name]

    def __len__(self):
        return len(next(iter(self._fields.values())))


@pytest.fixture(scope="module")
def registries():
    """Empty registries with detectron2's names, filled by register()."""
    regs = {name: Registry(name[: -len("_REGISTRY")]) for name in REGISTRY_NAMES}
    registered = register(regs)
    assert "MrcnnGeneralizedRCNN" in registered["META_ARCH_REGISTRY"]
    return regs


def _d2_cfg():
    """A detectron2-style config naming the Mrcnn components; small (R18-FPN, narrow heads)."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
                         "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
                         "MODEL.RPN.POST_NMS_TOPK_TRAIN", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 200])
    cfg.MODEL.META_ARCHITECTURE = "MrcnnGeneralizedRCNN"
    cfg.MODEL.BACKBONE.NAME = "Mrcnnbuild_resnet_fpn_backbone"
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "MrcnnRPN"
    cfg.MODEL.ROI_HEADS.NAME = "MrcnnStandardROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.NAME = "MrcnnFastRCNNConvFCHead"
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MrcnnMaskRCNNConvUpsampleHead"
    cfg.freeze()
    return cfg


def _d2_batch():
    """Two detectron2-style inputs: uint8 BGR images and stand-in Instances with boxes, classes, polygons."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in ((96, 128), (80, 112)):
        boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 20.0, 100.0, 64.0]])
        polygons = [[torch.tensor([b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]).numpy()] for b in boxes]
        inst = D2Instances((h, w), gt_boxes=D2Boxes(boxes), gt_classes=torch.tensor([3, 7]),
                           gt_masks=D2PolygonMasks(polygons))
        batch.append({"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
                      "height": h, "width": w, "instances": inst})
    return batch


def test_register_fills_every_registry_under_mrcnn_names(registries):
    """Every component of this package is in the detectron2 registry of the same kind as Mrcnn + name,
    and registering again adds nothing (it is idempotent)."""
    expected = {"META_ARCH_REGISTRY": "MrcnnGeneralizedRCNN", "BACKBONE_REGISTRY": "Mrcnnbuild_resnet_fpn_backbone",
                "PROPOSAL_GENERATOR_REGISTRY": "MrcnnRPN", "RPN_HEAD_REGISTRY": "MrcnnStandardRPNHead",
                "ANCHOR_GENERATOR_REGISTRY": "MrcnnDefaultAnchorGenerator",
                "ROI_HEADS_REGISTRY": "MrcnnRes5ROIHeads", "ROI_BOX_HEAD_REGISTRY": "MrcnnFastRCNNConvFCHead",
                "ROI_MASK_HEAD_REGISTRY": "MrcnnMaskRCNNConvUpsampleHead",
                "ROI_KEYPOINT_HEAD_REGISTRY": "MrcnnKRCNNConvDeconvUpsampleHead"}
    for registry, name in expected.items():
        assert name in registries[registry]
    assert "MrcnnTorchvisionROIHeads" in registries["ROI_HEADS_REGISTRY"]
    assert all(all(k.startswith(PREFIX) for k, _ in registries[r]) for r in REGISTRY_NAMES)
    assert all(not names for names in register(registries).values())


def test_meta_architecture_inference_and_training_step(registries):
    """The meta-architecture built as detectron2 builds it (`REGISTRY.get(name)(cfg)`) runs inference
    on detectron2-style inputs (Instances out, at the requested size) and a training step on
    detectron2-style batched inputs with foreign Instances (finite losses, parameters updated)."""
    torch.manual_seed(0)
    cfg = _d2_cfg()
    model = registries["META_ARCH_REGISTRY"].get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert "backbone.bottom_up.stem.conv1.weight" in model.state_dict()  # detectron2's names
    batch = _d2_batch()

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"], "height": 2 * x["height"], "width": 2 * x["width"]} for x in batch])
    for out, x in zip(outputs, batch):
        inst = out["instances"]
        assert tuple(inst.image_size) == (2 * x["height"], 2 * x["width"])
        assert inst.pred_boxes.tensor.shape == (len(inst), 4)
        assert inst.pred_masks.shape[1:] == (2 * x["height"], 2 * x["width"])

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    weight = model.roi_heads.box_predictor.cls_score.weight
    before = weight.detach().clone()
    losses = model(batch)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), before)


class StandInGeneralizedRCNN(nn.Module):
    """detectron2's GeneralizedRCNN calling convention, for components taken from the registries."""

    def __init__(self, cfg, regs):
        super().__init__()
        self.backbone = regs["BACKBONE_REGISTRY"].get(cfg.MODEL.BACKBONE.NAME)(cfg, D2ShapeSpec(channels=3))
        shapes = {k: D2ShapeSpec(channels=v.channels, stride=v.stride) for k, v in self.backbone.output_shape().items()}
        rpn_name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
        self.proposal_generator = regs["PROPOSAL_GENERATOR_REGISTRY"].get(rpn_name)(cfg, shapes)
        self.roi_heads = regs["ROI_HEADS_REGISTRY"].get(cfg.MODEL.ROI_HEADS.NAME)(cfg, shapes)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)

    def forward(self, batched_inputs):
        assert self.backbone.padding_constraints == {}
        images = ImageList.from_tensors([x["image"].float() - self.pixel_mean for x in batched_inputs],
                                        self.backbone.size_divisibility)
        features = self.backbone(images.tensor)
        gt = [x["instances"] for x in batched_inputs] if self.training else None
        proposals, proposal_losses = self.proposal_generator(images, features, gt)
        results, detector_losses = self.roi_heads(images, features, proposals, gt)
        if self.training:
            return {**proposal_losses, **detector_losses}
        return results


def test_components_work_inside_a_detectron2_style_model(registries):
    """Backbone, RPN and ROI heads, each built from its registry with detectron2's (cfg, input_shape)
    and called with detectron2's signatures (ImageList, Instances proposals), train and infer."""
    torch.manual_seed(0)
    model = StandInGeneralizedRCNN(_d2_cfg(), registries)
    batch = _d2_batch()
    model.train()
    losses = model(batch)
    assert {"loss_rpn_cls", "loss_cls", "loss_mask"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        results = model(batch)
    assert len(results) == 2 and results[0].pred_masks.shape[1:] == (1, 28, 28)
    assert results[1].pred_boxes.tensor.shape[1] == 4


def test_heads_follow_detectron2_head_conventions(registries):
    """Box head exposes output_shape as a property; mask and keypoint heads take (x, instances) and
    return losses in training or write pred_masks / pred_keypoints in inference; the anchor generator
    returns Boxes per level and has box_dim."""
    torch.manual_seed(0)
    cfg = _d2_cfg()
    shape = D2ShapeSpec(channels=32, height=14, width=14)
    box_head = registries["ROI_BOX_HEAD_REGISTRY"].get("MrcnnFastRCNNConvFCHead")(cfg, D2ShapeSpec(32, 7, 7))
    assert box_head.output_shape.channels == 64

    boxes = torch.tensor([[4.0, 4.0, 40.0, 50.0], [10.0, 0.0, 30.0, 20.0]])
    mask_head = registries["ROI_MASK_HEAD_REGISTRY"].get("MrcnnMaskRCNNConvUpsampleHead")(cfg, shape).eval()
    inst = D2Instances((64, 64), pred_boxes=D2Boxes(boxes), pred_classes=torch.tensor([1, 5]))
    out = mask_head(torch.randn(2, 32, 14, 14), [inst])
    assert out[0].pred_masks.shape == (2, 1, 28, 28)
    mask_head.train()
    polygons = [[b[[0, 1, 2, 1, 2, 3, 0, 3]].numpy()] for b in boxes]
    fg = D2Instances((64, 64), proposal_boxes=D2Boxes(boxes), gt_classes=torch.tensor([1, 5]),
                     gt_masks=D2PolygonMasks(polygons))
    assert set(mask_head(torch.randn(2, 32, 14, 14), [fg])) == {"loss_mask"}

    kp_head = registries["ROI_KEYPOINT_HEAD_REGISTRY"].get("MrcnnKRCNNConvDeconvUpsampleHead")(cfg, shape).eval()
    inst = D2Instances((64, 64), pred_boxes=D2Boxes(boxes), pred_classes=torch.tensor([0, 0]))
    out = kp_head(torch.randn(2, 32, 14, 14), [inst])
    assert out[0].pred_keypoints.shape == (2, 17, 3) and out[0].pred_keypoint_heatmaps.shape == (2, 17, 56, 56)

    shapes = [D2ShapeSpec(channels=32, stride=s) for s in (4, 8, 16, 32, 64)]
    anchors = registries["ANCHOR_GENERATOR_REGISTRY"].get("MrcnnDefaultAnchorGenerator")(cfg, shapes)
    per_level = anchors([torch.zeros(1, 32, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)])
    assert anchors.box_dim == 4 and per_level[0].tensor.shape == (16 * 16 * 3, 4)
    rpn_head = registries["RPN_HEAD_REGISTRY"].get("MrcnnStandardRPNHead")(cfg, shapes)
    logits, deltas = rpn_head([torch.zeros(1, 32, 8, 8)])
    assert logits[0].shape == (1, 3, 8, 8) and deltas[0].shape == (1, 12, 8, 8)


def test_register_without_detectron2_registers_nothing():
    """With registries=None and detectron2 not importable, register() returns {} instead of failing."""
    pytest.importorskip("fvcore")
    try:
        import detectron2  # noqa: F401
        pytest.skip("detectron2 is installed")
    except ImportError:
        pass
    assert register() == {}
