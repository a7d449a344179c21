"""Fixtures of the export tests: the C++ build (once per session) and a small exported model."""
import subprocess
from pathlib import Path

import pytest
import torch

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.export import export_model
from mrcnn_plugin.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
CPP_BUILD = REPO / "build" / "cpp"


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    """build/cpp after scripts/build_cpp.sh (which installs the Debian dev packages when missing)."""
    subprocess.run(["bash", str(REPO / "scripts" / "build_cpp.sh")], check=True, cwd=REPO)
    assert (CPP_BUILD / "mrcnn_infer").exists()
    return CPP_BUILD


def tiny_mask_cfg():
    """A small random Mask R-CNN (ResNet-18 FPN, 128 px test size) with one class, so that its
    random scores pass the 0.05 threshold and every image has detections to compare."""
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_HEADS.NUM_CLASSES", 1,
        "MODEL.RPN.PRE_NMS_TOPK_TEST", 200, "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
        "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 224, "TEST.DETECTIONS_PER_IMAGE", 10,
    ])
    return cfg


@pytest.fixture(scope="session")
def tiny_model_ts(tmp_path_factory) -> Path:
    """tiny_mask_cfg() with seeded weights, exported as `mrcnn export` does: its model.ts."""
    cfg = tiny_mask_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return export_model(cfg, str(tmp_path_factory.mktemp("export_tiny")), model=model)
