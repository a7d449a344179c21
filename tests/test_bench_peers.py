"""`mrcnn bench`'s runtime peers (mrcnn_plugin/bench_peers.py): torchvision's Mask R-CNN exported
to ONNX gives, run by ONNX Runtime and by OpenVINO, the detections torchvision gives eagerly; a peer
that cannot run is left out with its reason. On a small torchvision model (ResNet-18 FPN, 160 px):
the bench runs the same code on the full one."""
import importlib.util

import numpy as np
import pytest
import torch

from mrcnn_plugin import bench_peers
from mrcnn_plugin.bench_peers import PeerUnavailable, peer_candidate, peer_scores


@pytest.fixture(scope="module")
def small_torchvision():
    """(model, image): a seeded small torchvision Mask R-CNN keeping 20 detections at score >= 0,
    and a smooth random RGB image in [0, 1] of 120 x 160."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.resnet import resnet18
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet18(norm_layer=FrozenBatchNorm2d), trainable_layers=0)
    model = MaskRCNN(backbone, num_classes=3, min_size=128, max_size=160, box_score_thresh=0.0,
                     box_detections_per_img=20, rpn_post_nms_top_n_test=50).eval()
    coarse = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    image = torch.nn.functional.interpolate(coarse, size=(120, 160), mode="bilinear", align_corners=False)[0]
    return model, image


@pytest.mark.parametrize("peer", ["torchvision ONNX Runtime", "torchvision OpenVINO"])
def test_peer_gives_torchvision_s_detections(small_torchvision, peer, tmp_path):
    """The ONNX graph run by the peer keeps as many detections as the eager model (20), with the
    same scores to 1e-3 (the peer's runtime rounds differently), sorted the same way."""
    module = {"torchvision ONNX Runtime": "onnxruntime", "torchvision OpenVINO": "openvino"}[peer]
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: scripts/test.sh installs the bench extra")
    model, image = small_torchvision
    with torch.no_grad():
        expected = model([image])[0]
    scores = peer_scores(peer, model, image, tmp_path, threads=2)()
    assert scores.shape[0] == expected["scores"].shape[0] == 20
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-3)
    assert peer_candidate(peer, model, image, tmp_path, threads=2)() == 20
    assert (tmp_path / "torchvision_maskrcnn.onnx").is_file()


def test_a_peer_that_cannot_run_says_why(small_torchvision, tmp_path, monkeypatch):
    """A missing runtime names the package and the extra that installs it; a GPU device and a
    detectron2 that is not importable are reasons too."""
    model, image = small_torchvision
    real = importlib.util.find_spec
    monkeypatch.setattr(bench_peers.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("openvino", "detectron2") else real(name, *a))
    with pytest.raises(PeerUnavailable, match=r"openvino is not installed \(pip install -e \.\[bench\]\)"):
        peer_candidate("torchvision OpenVINO", model, image, tmp_path, threads=1)
    with pytest.raises(PeerUnavailable, match="detectron2 is not installed"):
        peer_candidate("detectron2 eager", model, image, tmp_path, threads=1)
    with pytest.raises(PeerUnavailable, match="CPU only"):
        peer_candidate("torchvision ONNX Runtime", model, image, tmp_path, threads=1, device="cuda")
