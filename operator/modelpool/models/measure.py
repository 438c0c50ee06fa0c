"""Measuring capability profiles of exported variants on a real ``tritonserver``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpool.models.client import classify_all, http_client, infer_texts
from modelpool.models.data import LabelledTexts
from modelpool.models.export import read_version
from modelpool.models.profile import (
    DEFAULT_BUCKET_EDGES,
    CapabilityProfile,
    bucket_accuracy,
    latency_figures,
    render_table,
    stub_rss_bytes,
    timed_requests,
)


@dataclass(frozen=True)
class ProfileSettings:
    """How much to measure."""

    latency_requests: int = 200
    concurrency: int = 8
    concurrent_requests: int = 400
    batch_size: int = 32
    bucket_edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES


def complexity_scores(texts: Sequence[str], scorer_path: Path | None) -> tuple[list[float], str]:
    """Scores from the learned scorer at ``scorer_path``, else from the router's heuristic scorer."""
    if scorer_path is not None:
        from modelpool.models.scorer import load_scorer

        return load_scorer(scorer_path).score(texts), f"torch:{scorer_path.name}"
    from modelpool.routing.scoring import HeuristicScorer

    return HeuristicScorer().score(texts), "heuristic"


def profile_model(
    url: str,
    server_pid: int,
    model_dir: Path,
    data: LabelledTexts,
    scores: tuple[list[float], str],
    dataset: str,
    settings: ProfileSettings = ProfileSettings(),
    device: str = "cpu",
) -> CapabilityProfile:
    """Measure one loaded model: accuracy (overall and by bucket), latency, throughput, memory."""
    version = read_version(model_dir)
    name = version.name
    texts = list(data.texts)
    probs = classify_all(http_client(url), name, texts, settings.batch_size)
    correct = probs.argmax(axis=1) == data.labels

    def make_sender() -> Callable[[str], Any]:
        client = http_client(url)
        return lambda text: infer_texts(client, name, [text])

    sample = [texts[i % len(texts)] for i in range(settings.latency_requests)]
    single, _ = timed_requests(make_sender, sample, 1)
    burst = [texts[i % len(texts)] for i in range(settings.concurrent_requests)]
    concurrent, wall = timed_requests(make_sender, burst, settings.concurrency)
    throughput = len(burst) / wall
    return CapabilityProfile(
        variant=version.variant.value,
        model_name=name,
        model_digest=version.digest,
        model_created=version.created,
        created=dt.datetime.now(dt.UTC),
        device=device,
        dataset=dataset,
        items=len(texts),
        accuracy=float(correct.mean()),
        complexity_scorer=scores[1],
        accuracy_by_bucket=bucket_accuracy(correct, scores[0], settings.bucket_edges),
        latency_batch1=latency_figures(single, 1),
        latency_concurrent=latency_figures(concurrent, settings.concurrency),
        throughput_rps=throughput,
        capacity_per_replica_rps=throughput,
        memory_rss_bytes=stub_rss_bytes(server_pid, name),
    )


def write_profiles(profiles: Sequence[CapabilityProfile], out: Path) -> None:
    """Write ``<model>.profile.json`` and ``.yaml`` per profile and ``profiles.txt`` (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    for profile in profiles:
        (out / f"{profile.model_name}.profile.json").write_text(profile.to_json(), encoding="utf-8")
        (out / f"{profile.model_name}.profile.yaml").write_text(profile.to_yaml(), encoding="utf-8")
    (out / "profiles.txt").write_text(render_table(profiles) + "\n", encoding="utf-8")


def profile_repository(
    repository: Path,
    models: Sequence[str],
    data: LabelledTexts,
    dataset: str,
    scorer_path: Path | None = None,
    settings: ProfileSettings = ProfileSettings(),
) -> list[CapabilityProfile]:
    """Start ``tritonserver`` on ``repository`` with ``models`` loaded and profile each in turn."""
    from modelpool.devcluster.triton import TritonProcess

    scores = complexity_scores(list(data.texts), scorer_path)
    with TritonProcess(repository, models, startup_timeout=300.0) as server:
        assert server.pid is not None
        return [
            profile_model(server.http_url, server.pid, repository / m, data, scores, dataset, settings)
            for m in models
        ]
