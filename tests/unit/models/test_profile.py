"""CapabilityProfile format, staleness, bucketing, latency summaries, AUC."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from modelpool.models.profile import (
    CapabilityProfile,
    LatencyFigures,
    bucket_accuracy,
    latency_figures,
    render_table,
    timed_requests,
)
from modelpool.models.scorer import roc_auc

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _profile(**changes: object) -> CapabilityProfile:
    latency = LatencyFigures(p50_ms=1.0, p95_ms=2.0, mean_ms=1.2, requests=10, concurrency=1)
    fields: dict[str, object] = {
        "variant": "small",
        "model_name": "banking77-small",
        "model_digest": "abc123",
        "model_created": CREATED,
        "created": CREATED + dt.timedelta(hours=1),
        "device": "cpu",
        "dataset": "banking77/test",
        "items": 100,
        "accuracy": 0.9,
        "complexity_scorer": "heuristic",
        "accuracy_by_bucket": bucket_accuracy(np.array([True, False]), [0.05, 0.9]),
        "latency_batch1": latency,
        "latency_concurrent": latency.model_copy(update={"concurrency": 8}),
        "throughput_rps": 500.0,
        "capacity_per_replica_rps": 500.0,
        "memory_rss_bytes": 1 << 20,
    }
    fields.update(changes)
    return CapabilityProfile.model_validate(fields)


def test_json_uses_camel_case_and_round_trips(tmp_path: Path) -> None:
    profile = _profile()
    data = json.loads(profile.to_json())
    assert data["apiVersion"] == "modelpool.dev/v1alpha1" and data["kind"] == "CapabilityProfile"
    assert data["capacityPerReplicaRps"] == 500.0
    assert data["accuracyByBucket"][0]["maxComplexity"] == 0.1
    assert data["latencyBatch1"]["p95Ms"] == 2.0
    (tmp_path / "p.yaml").write_text(profile.to_yaml())
    assert CapabilityProfile.load(tmp_path / "p.yaml") == profile
    assert CapabilityProfile.from_text(profile.to_json()) == profile


def test_invalid_fields_are_named() -> None:
    with pytest.raises(ValidationError, match="accuracy"):
        _profile(accuracy=1.5)
    with pytest.raises(ValidationError, match=r"capacity_per_replica_rps|capacityPerReplicaRps"):
        _profile(capacity_per_replica_rps=0)
    with pytest.raises(ValidationError, match="unknownField"):
        CapabilityProfile.from_text(json.dumps({**json.loads(_profile().to_json()), "unknownField": 1}))


def test_staleness_by_digest_and_export_time() -> None:
    profile = _profile()
    assert profile.staleness("abc123", CREATED) is None
    assert "digest" in (profile.staleness("other", CREATED) or "")
    assert "after" in (profile.staleness("abc123", CREATED + dt.timedelta(days=1)) or "")


def test_bucket_accuracy_assigns_edges_and_marks_empty() -> None:
    correct = np.array([True, True, False, True, False])
    buckets = bucket_accuracy(correct, [0.0, 0.1, 0.2, 0.5, 0.95], edges=(0.0, 0.1, 0.5, 0.9, 1.0))
    assert [b.items for b in buckets] == [2, 2, 0, 1]
    assert buckets[0].accuracy == 1.0 and buckets[1].accuracy == 0.5
    assert buckets[2].accuracy is None and buckets[3].accuracy == 0.0


def test_latency_figures_in_ms() -> None:
    figures = latency_figures([0.001 * i for i in range(1, 101)], concurrency=4)
    assert figures.p50_ms == pytest.approx(50.5)
    assert figures.p95_ms == pytest.approx(95.05)
    assert figures.requests == 100 and figures.concurrency == 4


def test_timed_requests_sends_each_text_once_per_sender() -> None:
    seen: list[str] = []

    def make_sender():  # type: ignore[no-untyped-def]
        def send(text: str) -> None:
            time.sleep(0.001)
            seen.append(text)

        return send

    latencies, wall = timed_requests(make_sender, [f"t{i}" for i in range(40)], concurrency=4)
    assert sorted(seen) == sorted(f"t{i}" for i in range(40))
    assert len(latencies) == 40 and all(x >= 0.001 for x in latencies)
    assert wall < sum(latencies)  # four threads overlapped


def test_table_lists_every_variant() -> None:
    table = render_table([_profile(), _profile(variant="large", model_name="banking77-large")])
    assert "banking77-small" in table and "banking77-large" in table and "n=1" in table


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=60).astype(float)
    positives = rng.random(60) < 0.3
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in scores[positives] for n in scores[~positives]]
    assert roc_auc(scores, positives) == pytest.approx(float(np.mean(pairs)))
    assert roc_auc([0.1, 0.9], np.array([False, True])) == 1.0
    assert np.isnan(roc_auc([0.1, 0.2], np.array([True, True])))
