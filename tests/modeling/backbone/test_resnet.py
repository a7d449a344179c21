"""ResNet variants: depths, ResNeXt groups, norms, stride placement, freezing and dilation."""
import pytest
import torch
from torch import nn

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, ShapeSpec
from mrcnn_plugin.modeling.backbone import build_resnet_backbone, build_resnet_fpn_backbone


def _cfg(**resnets):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    for k, v in resnets.items():
        setattr(cfg.MODEL.RESNETS, k, v)
    return cfg


@pytest.mark.parametrize("depth,blocks", [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3]), (50, [3, 4, 6, 3]),
                                          (101, [3, 4, 23, 3]), (152, [3, 8, 36, 3])])
def test_depths_have_the_papers_block_counts(depth, blocks):
    """Blocks per stage and the output channels per stage follow He et al. (2016), table 1."""
    extra = {"RES2_OUT_CHANNELS": 64} if depth < 50 else {}
    model = build_resnet_backbone(_cfg(DEPTH=depth, **extra), ShapeSpec(channels=3))
    assert [len(getattr(model, f"res{i}")) for i in range(2, 6)] == blocks
    shapes = model.output_shape()
    expansion = 1 if depth < 50 else 4
    assert [shapes[f"res{i}"].channels for i in range(2, 6)] == [64 * expansion * 2 ** k for k in range(4)]
    assert [shapes[f"res{i}"].stride for i in range(2, 6)] == [4, 8, 16, 32]


def test_forward_shapes_match_output_shape():
    """Feature maps have the advertised channels and stride."""
    model = build_resnet_backbone(_cfg(DEPTH=18, RES2_OUT_CHANNELS=64), ShapeSpec(channels=3)).eval()
    out = model(torch.rand(2, 3, 64, 96))
    for name, spec in model.output_shape().items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)


def test_resnext_groups_and_width():
    """X-101 32x8d: 32 groups of width 8 in res2's 3x3 (256 channels), doubling per stage."""
    model = build_resnet_backbone(_cfg(DEPTH=101, NUM_GROUPS=32, WIDTH_PER_GROUP=8), ShapeSpec(channels=3))
    assert model.res2[0].conv2.groups == 32 and model.res2[0].conv2.out_channels == 256
    assert model.res5[0].conv2.out_channels == 2048


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_placement(stride_in_1x1):
    """MSRA weights put the stride in the first 1x1, torchvision's in the 3x3."""
    block = build_resnet_backbone(_cfg(STRIDE_IN_1X1=stride_in_1x1), ShapeSpec(channels=3)).res3[0]
    assert block.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
    assert block.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))


def test_res5_dilation_keeps_stride_16():
    """RES5_DILATION 2 (DC5): res5 keeps stride 16 and dilates its 3x3 convolutions."""
    model = build_resnet_backbone(_cfg(RES5_DILATION=2), ShapeSpec(channels=3))
    assert model.output_shape()["res5"].stride == 16
    assert model.res5[0].conv2.dilation == (2, 2) and model.res5[0].conv2.padding == (2, 2)
    out = model(torch.rand(1, 3, 64, 64))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:]


@pytest.mark.parametrize("norm,cls", [("FrozenBN", FrozenBatchNorm2d), ("BN", nn.BatchNorm2d),
                                      ("GN", nn.GroupNorm), ("SyncBN", NaiveSyncBatchNorm)])
def test_norms(norm, cls):
    """NORM selects the normalization of every conv in the unfrozen stages."""
    model = build_resnet_backbone(_cfg(NORM=norm), ShapeSpec(channels=3))
    assert isinstance(model.res3[0].conv1.norm, cls)
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    assert torch.isfinite(out["res5"]).all()


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at(freeze_at):
    """FREEZE_AT k freezes the stem (1) and res2..res(k): no gradients, BN statistics frozen."""
    cfg = _cfg(NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    stages = ["stem", "res2", "res3", "res4", "res5"]
    for idx, name in enumerate(stages, start=1):
        stage = getattr(model, name)
        frozen = idx <= freeze_at
        assert all(p.requires_grad != frozen for p in stage.parameters()), name
        has_frozen_bn = any(isinstance(m, FrozenBatchNorm2d) for m in stage.modules())
        assert has_frozen_bn == frozen, name


def test_fpn_outputs_and_scripting():
    """FPN gives p2..p6 at strides 4..64 with FPN.OUT_CHANNELS each; scripted output equals eager."""
    cfg = _cfg(DEPTH=18, RES2_OUT_CHANNELS=64)
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    model = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    x = torch.rand(1, 3, 64, 96)
    out = model(x)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name, spec in model.output_shape().items():
        assert spec.channels == 32 and out[name].shape[-2:] == (64 // spec.stride, -(-96 // spec.stride))
    assert model.size_divisibility == 32
    scripted = torch.jit.script(model)
    for name, value in scripted(x).items():
        torch.testing.assert_close(value, out[name])


def test_fpn_rejects_non_contiguous_inputs():
    """FPN inputs must be one stride doubling apart."""
    cfg = _cfg()
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res4"]
    with pytest.raises(ValueError, match="stride"):
        build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
