"""CapabilityProfile format, staleness, bucketing, latency summaries, AUC."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from modelpool.models.data import LabelledTexts
from modelpool.models.profile import (
    CapabilityProfile,
    LatencyFigures,
    TimedRun,
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
    lock = threading.Lock()
    in_flight, most_in_flight = 0, 0
    together = threading.Barrier(4, timeout=10)  # broken (a failed request) unless 4 run at once

    def make_sender():  # type: ignore[no-untyped-def]
        first = True

        def send(text: str) -> None:
            nonlocal first, in_flight, most_in_flight
            with lock:
                in_flight += 1
                most_in_flight = max(most_in_flight, in_flight)
            if first:  # each sender's first request waits until the four are in flight together
                first = False
                together.wait()
            time.sleep(0.001)
            with lock:
                in_flight -= 1
                seen.append(text)

        return send

    run = timed_requests(make_sender, [f"t{i}" for i in range(40)], concurrency=4)
    assert run.failures == []
    assert sorted(seen) == sorted(f"t{i}" for i in range(40))
    assert len(run.latencies) == 40 and all(x >= 0.001 for x in run.latencies)
    assert most_in_flight == 4  # four threads overlapped, one request in flight each


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


def test_a_failed_request_is_counted_and_its_thread_goes_on() -> None:
    def make_sender():  # type: ignore[no-untyped-def]
        def send(text: str) -> None:
            if text in ("t0", "t7"):
                raise ConnectionError(f"refused {text}")

        return send

    run = timed_requests(make_sender, [f"t{i}" for i in range(20)], concurrency=2)
    assert len(run.latencies) == 18 and run.requests == 20  # the rest were still sent
    assert sorted(run.failures) == ["ConnectionError: refused t0", "ConnectionError: refused t7"]


def _toy_export(root: Path, gpu: bool) -> tuple[Path, LabelledTexts]:
    from modelpool.models.export import export_variant
    from modelpool.models.runtime import Variant
    from unit.models.toy_models import save_large_files, save_small

    labels = ("a", "b", "c")
    save_small(root / "trained", labels)
    save_large_files(root / "trained", labels)
    export_variant(root / "trained", root / "repo", Variant.SMALL, "toy")
    export_variant(root / "trained", root / "repo", Variant.LARGE, "toy", gpu=gpu)
    texts = tuple(f"text {i}" for i in range(9))
    return root / "repo", LabelledTexts(texts, np.arange(9, dtype=np.int64) % 3, labels)


def test_profile_names_the_device_from_config_and_the_client_processes(tmp_path: Path) -> None:
    from modelpool.models.measure import ProfileSettings, profile_model
    from unit.models.fake_triton import fake_triton

    repo, data = _toy_export(tmp_path, gpu=True)
    settings = ProfileSettings(latency_requests=5, concurrent_requests=12, concurrency=4)  # 2 processes
    scores = ([0.05] * len(data), "heuristic")
    with fake_triton(classes=3) as server:
        large = profile_model(server.url, os.getpid(), repo / "toy-large", data, scores, "toy/test", settings)
        small = profile_model(server.url, os.getpid(), repo / "toy-small", data, scores, "toy/test", settings)
    assert (large.device, small.device) == ("gpu", "cpu")  # the large model's config.pbtxt is KIND_GPU
    assert len(server.texts) == 2 * (9 + 5 + 12)  # every request of both profiles reached the server
    assert json.loads(large.to_json())["concurrentClient"] == {"processes": 2, "threads": 4}
    assert large.latency_concurrent.requests == 12 and large.latency_concurrent.concurrency == 4
    assert large.throughput_rps == large.capacity_per_replica_rps > 0


def test_load_from_several_client_processes_sends_every_request_once() -> None:
    from modelpool.models.measure import concurrent_load, thread_split
    from unit.models.fake_triton import fake_triton

    assert thread_split(8, 3) == [3, 3, 2] and thread_split(2, 4) == [1, 1]
    texts = [f"q{i}" for i in range(30)]
    with fake_triton(classes=2) as server:
        load = concurrent_load(server.url, "m", texts, threads=5, processes=2)
    assert (load.client.processes, load.client.threads) == (2, 5)
    assert sorted(server.texts) == sorted(texts) and len(load.run.latencies) == 30
    assert load.run.failures == [] and load.run.wall > 0 and load.throughput_rps > 0
    with fake_triton(classes=2, fail_on=("q3",)) as server:
        run = concurrent_load(server.url, "m", texts, threads=4, processes=2).run
    assert len(run.latencies) == 29 and len(run.failures) == 1 and "boom" in run.failures[0]


def test_throughput_counts_the_time_every_client_process_was_sending() -> None:
    from modelpool.models.measure import steady_throughput

    # process A sends from t=0 to 10, 10 answers/s; B starts late (t=2) and ends at 10, 10 answers/s
    a = TimedRun([0.1] * 100, [], 0.0, 10.0, [0.1 * i for i in range(1, 101)])
    b = TimedRun([0.1] * 80, [], 2.0, 10.0, [2 + 0.1 * i for i in range(1, 81)])
    assert steady_throughput([a, b]) == pytest.approx(20.0, rel=0.02)  # not 180 / 10 s
    late = TimedRun([0.1] * 10, [], 9.0, 10.0, [9 + 0.1 * i for i in range(1, 11)])
    assert steady_throughput([a, late]) == pytest.approx(110 / 10.0)  # too short a window: whole run


def test_a_failed_request_fails_the_profile_instead_of_inflating_throughput(tmp_path: Path) -> None:
    from modelpool.models.measure import ProfileSettings, profile_model
    from unit.models.fake_triton import fake_triton

    repo, data = _toy_export(tmp_path, gpu=False)
    settings = ProfileSettings(latency_requests=3, concurrent_requests=6, concurrency=2)
    scores = ([0.05] * len(data), "heuristic")
    # batches (classify_all) pass; every single-item request of "text 1" is answered 400
    with fake_triton(3, ("text 1",), single_only=True) as server, pytest.raises(Exception) as err:
        profile_model(server.url, os.getpid(), repo / "toy-small", data, scores, "toy/test", settings)
    assert type(err.value).__name__ == "ProfileError", repr(err.value)
    assert "1 of 3 batch-1 requests to toy-small failed" in str(err.value) and "boom" in str(err.value)


def test_profiles_without_the_client_setup_still_load() -> None:
    data = json.loads(_profile().to_json())
    assert data.pop("concurrentClient") is None  # written as null; older profiles lack the key
    assert CapabilityProfile.from_text(json.dumps(data)).concurrent_client is None
