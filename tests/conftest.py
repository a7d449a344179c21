"""Shared pytest fixtures, and the inference plan the suite runs under."""
import os
import tempfile
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[1]

# prepare_for_inference measures plans by default (tens of seconds on the R50 models): the suite
# runs the fixed rule unless a test asks for "auto" itself (on a tiny model), and keeps measured
# plans in a folder of its own, not the user's cache. Set before any test module imports the
# package; subprocesses (the CLI, the C++ programs) inherit both.
os.environ.setdefault("MRCNN_INFERENCE_PLAN", "fixed")
os.environ.setdefault("MRCNN_PLAN_CACHE", tempfile.mkdtemp(prefix="mrcnn-plans-"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only `shared/` folder (golden outputs, data) beside the checkout.

    A copy of the tree may carry it inside the repository instead. Tests that
    need it fail when neither exists: the goldens are part of the test suite.
    """
    for candidate in (_REPO_ROOT.parent / "shared", _REPO_ROOT / "shared"):
        if candidate.is_dir():
            return candidate
    pytest.fail("shared/ folder (golden outputs and coco-mini) not found beside or inside the repository")
