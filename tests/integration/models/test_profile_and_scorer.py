"""Capability profile measured on the real tritonserver; the trained scorer through the router's loader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelpool.models.export import read_version
from modelpool.models.measure import ProfileSettings, complexity_scores, profile_model, write_profiles
from modelpool.models.paths import banking77_dir
from modelpool.models.profile import CapabilityProfile, ConcurrentClient, render_table
from modelpool.models.train import load_limited

from .conftest import LIMIT, Built

pytestmark = [pytest.mark.models, pytest.mark.triton]


def test_profile_of_small_variant(built: Built, triton: Any, tmp_path: Any) -> None:
    test = load_limited(banking77_dir(), LIMIT, 0).test
    scores = complexity_scores(list(test.texts), built.scorer)
    settings = ProfileSettings(latency_requests=30, concurrent_requests=60, concurrency=4)
    model_dir = built.repository / "banking77-small"
    profile = profile_model(triton.http_url, triton.pid, model_dir, test, scores, "banking77/test", settings)
    version = read_version(model_dir)
    assert (
        profile.model_digest == version.digest and profile.staleness(version.digest, version.created) is None
    )
    assert profile.items == len(test) and 0.2 < profile.accuracy <= 1.0
    assert sum(b.items for b in profile.accuracy_by_bucket) == len(test)
    assert profile.latency_batch1.requests == 30 and profile.latency_concurrent.concurrency == 4
    assert profile.concurrent_client == ConcurrentClient(processes=2, threads=4)  # the default client setup
    assert profile.device == "cpu" and profile.latency_concurrent.requests == 60
    assert 0 < profile.latency_batch1.p50_ms <= profile.latency_batch1.p95_ms
    assert profile.throughput_rps > 10 and profile.memory_rss_bytes > 20 * 2**20
    write_profiles([profile], tmp_path)
    assert CapabilityProfile.load(tmp_path / "banking77-small.profile.yaml") == profile
    assert "banking77-small" in render_table([profile])


def test_scorer_loads_through_router_and_separates(built: Built) -> None:
    from modelpool.routing.config import ScorerConfig
    from modelpool.routing.scoring import ComplexityScorer, load_scorer

    scorer = load_scorer(ScorerConfig(kind="torch", path=str(built.scorer)))
    assert isinstance(scorer, ComplexityScorer)
    scores = scorer.score(["card not arrived", "why was I charged twice for the same exchange in euros?", ""])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scorer.score([]) == []
    assert built.scorer_report["auc_scorer"] > 0.65
    assert np.isfinite(built.scorer_report["auc_one_minus_confidence"])


def test_missing_scorer_folder_names_the_fix(tmp_path: Any) -> None:
    from modelpool.models.scorer import load_scorer

    with pytest.raises(FileNotFoundError, match="train-scorer"):
        load_scorer(tmp_path)


def test_profile_command_writes_every_model(
    built: Built, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelpool.models.cli import main

    out = tmp_path / "profiles"
    args = ["models", "profile", "--repository", str(built.repository), "--scorer", str(built.scorer)]
    assert (
        main([*args, "--out", str(out), "--limit", str(LIMIT), "--requests", "10", "--concurrency", "2"]) == 0
    )
    printed = capsys.readouterr().out
    for model in ("banking77-small", "banking77-int8", "banking77-large"):
        profile = CapabilityProfile.load(out / f"{model}.profile.json")
        assert profile.model_name == model and profile.complexity_scorer.startswith("torch:")
        assert profile.latency_batch1.requests == 10 and profile.memory_rss_bytes > 0
        assert model in printed
    large = CapabilityProfile.load(out / "banking77-large.profile.json")
    small = CapabilityProfile.load(out / "banking77-small.profile.json")
    assert large.latency_batch1.p50_ms > small.latency_batch1.p50_ms


def test_a_model_triton_cannot_load_is_named_without_a_traceback(
    built: Built, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from modelpool.models.cli import main

    repository = tmp_path / "repository"
    shutil.copytree(built.repository / "banking77-small", repository / "banking77-small")
    (repository / "banking77-small" / "1" / "artifacts" / "small.npz").unlink()  # initialize() fails
    args = [
        "models",
        "profile",
        "--repository",
        str(repository),
        "--limit",
        "30",
        "--out",
        str(tmp_path / "p"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "modelpool models profile: error: tritonserver could not load the models: " in err, err
    assert "banking77-small" in err and "small.npz" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()
