"""Well-known locations: the shared data folder and the model cache.

``$MODELPOOL_SHARED`` names the shared folder (the one holding ``data/``), as it does for the test
suite and the benchmarks; without it, a source checkout uses ``../shared`` beside the checkout.
An installed package has no default: pass ``--data`` or set ``$MODELPOOL_SHARED``.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelpool.models.data import DatasetError

SHARED_ENV = "MODELPOOL_SHARED"
_FIX = (
    f"pass --data (a CSV or a folder with train.csv and test.csv) or set {SHARED_ENV} to the shared/ "
    "folder (the one holding data/datasets/banking77)"
)


def source_checkout() -> Path | None:
    """The repository root when this module runs from a source checkout (``<root>/operator/...``),
    else None (an installed package: its parents say nothing about where data lives)."""
    here = Path(__file__).resolve()
    root = here.parents[3]
    if here.parents[2].name == "operator" and (root / "pyproject.toml").is_file():
        return root
    return None


def shared_dir() -> Path:
    """The read-only shared folder (``data/``, ``README.md``): ``$MODELPOOL_SHARED``, else ``../shared``
    beside a source checkout."""
    override = os.environ.get(SHARED_ENV)
    if override:
        return Path(override).expanduser()
    root = source_checkout()
    if root is None:
        raise DatasetError(f"no default data set location for an installed modelpool: {_FIX}")
    return (root.parent / "shared").resolve()


def shared_data_dir() -> Path:
    """The shared data folder: ``data/`` in :func:`shared_dir`."""
    return shared_dir() / "data"


def banking77_dir() -> Path:
    """The Banking77 data set folder (``train.csv``, ``test.csv``, ``categories.json``)."""
    return shared_data_dir() / "datasets" / "banking77"


def default_dataset() -> Path:
    """The data set the commands use without ``--data`` (Banking77); a ``DatasetError`` saying how to
    give one when it is not there."""
    path = banking77_dir()
    if not path.is_dir():
        raise DatasetError(f"no --data given and the default data set {path} does not exist: {_FIX}")
    return path


def cache_dir() -> Path:
    """Cache for expensive model work, made on use: ``models/`` under the project's cache root
    (``$MODELPOOL_CACHE``, default ``~/.cache/modelpool``), beside the built binaries and the venv."""
    from modelpool.devcluster.toolchain import cache_dir as cache_root

    path = cache_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
