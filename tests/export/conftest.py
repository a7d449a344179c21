"""Fixtures of the export tests: the C++ build (once per session) and a small exported model."""
import subprocess
from pathlib import Path

import pytest
import torch

from mrcnn_plugin.export import export_model
from mrcnn_plugin.modeling import build_model
from tiny_models import tiny_mask_cfg

REPO = Path(__file__).resolve().parents[2]
CPP_BUILD = REPO / "build" / "cpp"


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    """build/cpp after scripts/build_cpp.sh (which installs the Debian dev packages when missing)."""
    subprocess.run(["bash", str(REPO / "scripts" / "build_cpp.sh")], check=True, cwd=REPO)
    assert (CPP_BUILD / "mrcnn_infer").exists()
    return CPP_BUILD


@pytest.fixture(scope="session")
def tiny_model_ts(tmp_path_factory) -> Path:
    """tiny_mask_cfg() with seeded weights, exported as `mrcnn export` does: its model.ts."""
    cfg = tiny_mask_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return export_model(cfg, str(tmp_path_factory.mktemp("export_tiny")), model=model)
