"""Reduced-size trained variants, scorer and Triton repository shared by the models integration tests.

Everything is built once per session through the real ``modelpool models`` commands on a seeded
sample of Banking77 (600 training rows, 200 test rows); encoder embeddings are cached in
``$MODELPOOL_CACHE/models`` (default ``~/.cache/modelpool/models``), so reruns are quicker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LIMIT = 600


@dataclass(frozen=True)
class Built:
    """Folders written by the session's training and export."""

    trained: Path
    scorer: Path
    repository: Path
    report: dict[str, Any]
    scorer_report: dict[str, Any]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from modelpool.models.cli import main

    root = tmp_path_factory.mktemp("models")
    trained, scorer, repository = root / "trained", root / "scorer", root / "repository"
    limit = ["--limit", str(LIMIT), "--seed", "0"]
    assert main(["models", "train", "--out", str(trained), *limit]) == 0
    assert main(["models", "train-scorer", "--trained", str(trained), "--out", str(scorer), *limit]) == 0
    assert (
        main(["models", "export", "--trained", str(trained), "--out", str(repository), "--device", "cpu"])
        == 0
    )
    return Built(
        trained,
        scorer,
        repository,
        json.loads((trained / "train-report.json").read_text()),
        json.loads((scorer / "scorer-report.json").read_text()),
    )


@pytest.fixture(scope="session")
def triton(built: Built) -> Iterator[Any]:
    from modelpool.devcluster.triton import TritonProcess

    with TritonProcess(built.repository, startup_timeout=300.0) as server:
        yield server
