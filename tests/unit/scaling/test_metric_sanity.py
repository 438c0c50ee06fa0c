"""Absurd capacities hold instead of scaling down, profiles refuse non-finite numbers, and hold
messages carry no number that changes at every decision (docs/scaling.md, *The algorithm*, step 1)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from pydantic import ValidationError

from modelpool.models.profile import CapabilityProfile
from modelpool.scaling import RatePoint, VariantMetrics, VariantState, decide

from .helpers import NOW, one, only, steady


def busy(**extra: float) -> VariantMetrics:
    """800 req/s served at 10 ms per request (one replica of one instance serves 100 req/s)."""
    series = tuple(RatePoint(NOW - 7 + i, 800.0) for i in range(8))
    values: dict[str, float] = {"queue_time_s": 0.02, "compute_time_s": 0.01, "pending_requests": 5.0}
    values.update(extra)
    return VariantMetrics(rate_series=series, newest_sample_t=NOW, rate_window_s=4.0, **values)  # type: ignore[arg-type]


# --- 3: a capacity no replica has must not size the variant -------------------------------------


@pytest.mark.parametrize("compute_time_s", [1e-7, 5e-324])
def test_a_compute_time_implying_an_absurd_capacity_holds(compute_time_s: float) -> None:
    """1e-7 s per request made one replica worth 1e7 req/s: 12 -> 1 before."""
    d = only(one(busy(compute_time_s=compute_time_s), current=12, capacity_per_replica_rps=None))
    assert d.held, d.reason
    assert d.desired_replicas == 12
    assert d.reason.startswith("holding 12 replicas: metrics absurd: compute time")
    assert "maxPlausibleRps" in d.reason


def test_an_absurd_capacity_holds_even_without_demand() -> None:
    idle = replace(steady(0.0), compute_time_s=1e-9, pending_requests=0.0)
    previous = VariantState(replicas=6, decided_at=NOW - 10)
    d = only(one(idle, current=6, previous=previous, capacity_per_replica_rps=None))
    assert d.held and d.desired_replicas == 6


@pytest.mark.parametrize("capacity", [math.inf, 1e308, 2e6])
def test_a_configured_capacity_that_is_not_finite_or_plausible_holds(capacity: float) -> None:
    """inf and 1e308 req/s per replica scaled 6 -> 1 before."""
    m = busy(compute_time_s=0.05)
    d = only(one(m, current=6, capacity_per_replica_rps=capacity, max_plausible_rps=1e6))
    assert d.held, d.reason
    assert d.desired_replicas == 6
    assert "capacityPerReplicaRps" in d.reason and "maxPlausibleRps" in d.reason
    assert d.capacity_per_replica_rps is None  # nor does the budget share GPUs by it


def test_an_absurd_capacity_under_a_budget_holds_without_failing_the_pass() -> None:
    decision = decide(one(busy(), current=3, budget=2, capacity_per_replica_rps=math.inf), NOW)
    (variant,) = decision.pools["pool"].variants
    assert variant.held


def test_a_capacity_at_the_plausible_limit_still_decides() -> None:
    d = only(one(busy(), current=3, capacity_per_replica_rps=1e6, max_plausible_rps=1e6))
    assert not d.held, d.reason


def _profile_fields(**changes: object) -> dict[str, object]:
    latency = {"p50Ms": 1.0, "p95Ms": 2.0, "meanMs": 1.2, "requests": 10, "concurrency": 1}
    fields: dict[str, object] = {
        "variant": "small",
        "modelName": "banking77-small",
        "modelDigest": "abc123",
        "modelCreated": "2026-01-02T03:04:05Z",
        "created": "2026-01-02T04:04:05Z",
        "device": "cpu",
        "dataset": "banking77/test",
        "items": 100,
        "accuracy": 0.9,
        "complexityScorer": "heuristic",
        "accuracyByBucket": [{"minComplexity": 0.0, "maxComplexity": 1.0, "items": 2, "accuracy": 0.5}],
        "latencyBatch1": latency,
        "latencyConcurrent": {**latency, "concurrency": 8},
        "throughputRps": 500.0,
        "capacityPerReplicaRps": 500.0,
        "memoryRssBytes": 1 << 20,
    }
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capacityPerReplicaRps", math.inf),
        ("capacityPerReplicaRps", math.nan),
        ("throughputRps", math.inf),
        ("accuracy", math.nan),
    ],
)
def test_a_profile_refuses_non_finite_numbers_naming_the_field(field: str, value: float) -> None:
    CapabilityProfile.model_validate(_profile_fields())  # the base is valid
    with pytest.raises(ValidationError, match=rf"(?s){field}.*finite number"):
        CapabilityProfile.model_validate(_profile_fields(**{field: value}))


def test_a_profile_file_with_an_infinite_capacity_is_refused() -> None:
    """YAML spells infinity .inf; a ConfigMap profile with it was accepted before."""
    text = CapabilityProfile.model_validate(_profile_fields()).to_yaml()
    text = text.replace("capacityPerReplicaRps: 500.0", "capacityPerReplicaRps: .inf")
    assert ".inf" in text
    with pytest.raises(ValidationError, match=r"(?s)capacityPerReplicaRps.*finite number"):
        CapabilityProfile.from_text(text)


# --- 5: a lasting problem writes the condition once -----------------------------------------------


def _held_reasons(metrics: VariantMetrics, nows: tuple[float, ...]) -> set[str]:
    previous = VariantState(replicas=3, decided_at=NOW - 10)
    reasons = set()
    for now in nows:
        pool = decide(one(metrics, current=3, previous=previous), now).pools["pool"]
        assert pool.metrics_held
        reasons.add(pool.held_reason)
    return reasons


def test_a_lasting_outage_keeps_one_hold_message() -> None:
    """The sample's age was in the message (99s, 114s, 129s old): every decision of an outage
    rewrote the MetricsAvailable condition, the status, and woke every RoutingPolicy."""
    reasons = _held_reasons(steady(5.0, compute_time_s=0.01), (NOW + 99, NOW + 114, NOW + 129, NOW + 3600))
    assert reasons == {"small: holding 3 replicas: metrics stale: newest sample older than staleAfter 30s"}


def test_a_clock_ahead_keeps_one_hold_message() -> None:
    ahead = steady(5.0, now=NOW + 3600)
    assert len(_held_reasons(ahead, (NOW, NOW + 1.5, NOW + 7))) == 1


def test_timestamps_out_of_order_keep_one_hold_message() -> None:
    previous = VariantState(replicas=3, decided_at=NOW - 10)
    reasons = set()
    for now in (NOW, NOW + 2, NOW + 4):
        backwards = VariantMetrics(
            rate_series=(RatePoint(now, 40.0), RatePoint(now - 2, 1.0)), newest_sample_t=now
        )
        reasons.add(only(one(backwards, current=3, previous=previous), now).reason)
    assert reasons == {
        "holding 3 replicas: metrics absurd: rate series timestamps repeat or go back, not forward"
    }


def test_absurd_magnitudes_are_shown_coarsely() -> None:
    """A runaway rate that changes a little at every decision does not change the message."""
    reasons = {only(one(steady(rps), current=3)).reason for rps in (5.01e7, 5.2e7, 5.4e7)}
    assert reasons == {
        "holding 3 replicas: metrics absurd: request rate ~5e+07 req/s > maxPlausibleRps 1000000"
    }
