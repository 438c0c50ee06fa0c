"""Well-known locations: the shared data folder and the model cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """The read-only shared data folder (``../shared/data`` from the repo root, or ``$MODELPOOL_SHARED``)."""
    override = os.environ.get("MODELPOOL_SHARED")
    return Path(override) if override else (REPO_ROOT / "../shared/data").resolve()


def banking77_dir() -> Path:
    """The Banking77 data set folder (``train.csv``, ``test.csv``, ``categories.json``)."""
    return shared_data_dir() / "datasets" / "banking77"


def cache_dir() -> Path:
    """Cache for expensive model work, made on use: ``models/`` under the project's cache root
    (``$MODELPOOL_CACHE``, default ``~/.cache/modelpool``), beside the built binaries and the venv."""
    from modelpool.devcluster.toolchain import cache_dir as cache_root

    path = cache_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
