"""ROI heads hand their poolers feature maps converted once: the box pooler's levels are put in the
layout the ROI kernel reads (channels-last on CPU), and the mask and keypoint poolers, which read
the same maps, then have nothing left to convert; other features pass through untouched."""
import pytest
import torch

from mrcnn_plugin.modeling import build_model
from tiny_models import tiny_cfg


@pytest.mark.parametrize("kind", ["fpn", "keypoints", "c4"])
def test_features_for_poolers_convert_once(kind):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(keypoints=kind == "keypoints", c4=kind == "c4")).eval()
    heads = model.roi_heads
    with torch.no_grad():
        # NCHW, as NNPACK's convolutions write them
        features = {k: v.contiguous() for k, v in model.backbone(torch.randn(1, 3, 128, 192)).items()}
    pooled = heads.in_features
    assert not any(features[f].is_contiguous(memory_format=torch.channels_last) for f in pooled)
    prepared = heads._features_for_poolers(features)
    assert set(prepared) == set(features)
    for name, feature in prepared.items():
        if name in pooled:
            assert feature.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(feature, features[name], atol=0, rtol=0)
        else:
            assert feature is features[name]
    readers = [p for p in (getattr(heads, "mask_pooler", None), getattr(heads, "keypoint_pooler", None),
                           getattr(heads, "pooler", None)) if p is not None]
    assert readers
    for pooler in readers:
        maps = [prepared[f] for f in pooled]
        assert all(again is m for again, m in zip(pooler.prepare_features(maps), maps))
