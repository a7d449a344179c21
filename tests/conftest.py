"""Shared pytest fixtures."""

from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[1]


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
