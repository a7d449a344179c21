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
    """build/cpp, brought up to date with the sources. scripts/test.sh configures it first
    (scripts/build_cpp.sh, which also installs the Debian dev packages): the tests only build."""
    if not (CPP_BUILD / "CMakeCache.txt").exists():
        pytest.fail("build/cpp is not configured: run bash scripts/build_cpp.sh first (scripts/test.sh does)")
    subprocess.run(["cmake", "--build", str(CPP_BUILD), "-j2"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    assert (CPP_BUILD / "mrcnn_infer").exists()
    return CPP_BUILD


@pytest.fixture(scope="session")
def tiny_model_ts(tmp_path_factory) -> Path:
    """tiny_mask_cfg() with seeded weights, exported as `mrcnn export` does: its model.ts."""
    cfg = tiny_mask_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return export_model(cfg, str(tmp_path_factory.mktemp("export_tiny")), model=model)
