"""A tier at zero replicas whose capacity is not set: it has no pod, so no compute time to measure
one replica's capacity from. With demand (seen by the router, or about to be moved onto it by
routing) it held at zero for good and marked the whole pool's metrics as missing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from modelpool.scaling import (
    PoolDecision,
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
    decide,
)
from modelpool.scaling.decide import serving_floors
from unit.scaling.helpers import NOW, steady


def _router(rps: float, now: float = NOW) -> VariantMetrics:
    """What a tier at zero replicas shows: the router's arrivals, no Triton series."""
    series = tuple(RatePoint(now - 5 * (5 - i), rps) for i in range(6))
    return VariantMetrics(rate_series=series, router_rps=rps, newest_sample_t=now)


def _unset(**kw: object) -> VariantSettings:
    """The CRD defaults: no capacityPerReplicaRps and no profile (capacity from compute time)."""
    base: dict[str, object] = {"name": "small", "min_replicas": 0, "max_replicas": 8, "scale_to_zero": True}
    base.update(kw)
    return VariantSettings(**base)  # type: ignore[arg-type]


LARGE = VariantInput(
    VariantSettings(name="large", min_replicas=1, max_replicas=4, capacity_per_replica_rps=5.0),
    VariantMetrics(rate_series=steady(1.0).rate_series, newest_sample_t=NOW, compute_time_s=0.2),
    current_replicas=1,
)


def _pool(*variants: VariantInput, now: float = NOW) -> PoolDecision:
    return decide(ScalingInput.single(PoolInput("p", variants)), now).pools["p"]


def test_a_tier_at_zero_with_demand_and_no_capacity_starts_one_replica() -> None:
    small = VariantInput(_unset(), _router(20.0), 0, VariantState(replicas=0, decided_at=NOW - 15))
    pool = _pool(small, LARGE)
    v = pool.variant("small")
    assert v.desired_replicas == 1
    assert not v.held and not pool.metrics_held
    assert (
        v.reason == "scale up 0->1: starting 1 replica from zero: demand 20 req/s, capacity not yet measured"
    )


def test_load_routing_moves_onto_a_tier_at_zero_starts_it() -> None:
    """No arrivals yet: the small tier's shortfall is about to be routed here."""
    quantized = VariantInput(
        _unset(name="quantized"),
        _router(0.0),
        0,
        VariantState(replicas=0, decided_at=NOW - 15),
        expected_extra_rps=30.0,
    )
    pool = _pool(quantized, LARGE)
    v = pool.variant("quantized")
    assert (v.desired_replicas, v.held, pool.metrics_held) == (1, False, False)
    assert "starting 1 replica from zero: demand 30 req/s, capacity not yet measured" in v.reason


def test_a_start_from_zero_takes_min_replicas() -> None:
    """A scale-to-zero tier with minReplicas 2 goes to zero when idle and back to 2, not 1."""
    small = VariantInput(_unset(min_replicas=2), _router(20.0), 0)
    v = _pool(small, LARGE).variant("small")
    assert v.desired_replicas == 2
    assert "starting 2 replicas from zero" in v.reason


def test_replicas_still_starting_are_kept_and_not_a_metrics_hold() -> None:
    """Started from zero, none ready yet: nothing measures the capacity, and nothing is wrong."""
    small = VariantInput(
        _unset(), _router(20.0), 1, VariantState(replicas=1, decided_at=NOW - 15), ready_replicas=0
    )
    pool = _pool(small, LARGE)
    v = pool.variant("small")
    assert (v.desired_replicas, v.held, pool.metrics_held) == (1, False, False)
    assert "keeping 1 until a replica is ready to measure it: demand 20 req/s" in v.reason


def test_serving_replicas_without_compute_time_still_hold() -> None:
    """Where replicas serve, a missing compute time is a missing metric (unchanged)."""
    small = VariantInput(_unset(), _router(20.0), 2)
    pool = _pool(small, LARGE)
    assert pool.variant("small").held and pool.metrics_held
    assert "capacity unknown" in pool.variant("small").reason


def test_the_measured_capacity_is_remembered_and_sizes_the_tier_from_zero() -> None:
    measured = replace(_router(20.0), compute_time_s=0.2)  # one replica: 5 req/s
    first = _pool(VariantInput(_unset(), measured, 4), LARGE).variant("small")
    assert first.state is not None and first.state.capacity_rps == pytest.approx(5.0)
    idle = VariantInput(_unset(), _router(0.0, NOW + 600), 0, first.state)
    gone = _pool(idle, LARGE, now=NOW + 600).variant("small")
    assert gone.desired_replicas == 0
    assert gone.state is not None and gone.state.capacity_rps == pytest.approx(5.0)  # kept while at zero
    back = VariantInput(_unset(), _router(20.0, NOW + 1200), 0, gone.state)
    v = _pool(back, LARGE, now=NOW + 1200).variant("small")
    assert v.desired_replicas >= 4  # 20 req/s at 5 req/s per replica, not the blind single replica
    assert not v.held
    assert "capacity 5.0 req/s per replica as last measured (none serves now)" in v.reason


def test_a_set_capacity_is_not_remembered_and_an_absurd_memory_is_ignored() -> None:
    set_capacity = VariantInput(
        _unset(capacity_per_replica_rps=10.0), replace(_router(20.0), compute_time_s=0.2), 2
    )
    state = _pool(set_capacity, LARGE).variant("small").state
    assert state is not None and state.capacity_rps is None
    for absurd in (math.nan, math.inf, -1.0, 0.0):
        remembered = VariantState(replicas=0, decided_at=NOW - 15, capacity_rps=absurd)
        v = _pool(VariantInput(_unset(), _router(20.0), 0, remembered), LARGE).variant("small")
        assert v.desired_replicas == 1 and "capacity not yet measured" in v.reason, absurd


def test_serving_floors_keep_the_last_tier_when_every_floor_is_zero() -> None:
    assert serving_floors([0, 0, 0]) == (0, 0, 1)
    assert serving_floors([0, 2, 0]) == (0, 2, 0)
    assert serving_floors([1]) == (1,)
    assert serving_floors([0]) == (1,)
    assert serving_floors([]) == ()
