"""Fixtures every test area may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only data sets and traces beside the checkout (``../shared/data``)."""
    base = Path(os.environ.get("MODELPOOL_SHARED", REPO_ROOT.parent / "shared"))
    return base / "data"
