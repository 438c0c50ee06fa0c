"""The oracle's per-second need and the smallest static size, checked on the simulator itself."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelpool.scaling.baselines import OraclePolicy, StaticPolicy, need_per_second
from modelpool.scaling.clairvoyant import clairvoyant_need, fewest_static_replicas
from modelpool.scaling.simulator import ServiceModel, SimConfig, TraceRequest, simulate

SERVICE = ServiceModel(0.1, 0.0, 0.0)  # 0.1 s per request: 10 req/s per replica


def evenly(start: float, end: float, rate: float) -> list[TraceRequest]:
    n = round((end - start) * rate)
    return [TraceRequest(start + i / rate, 100, 10) for i in range(n)]


def test_a_burst_the_queue_absorbs_within_the_slo_needs_no_extra_replica() -> None:
    # 15 requests in half a second = 1.5 s of work for one replica, done within the 2 s SLO.
    trace = evenly(0.0, 20.0, 2.0) + evenly(10.0, 10.5, 30.0)
    trace.sort(key=lambda r: r.arrival_s)
    need = clairvoyant_need(trace, SERVICE, slo_s=2.0)
    assert set(need) == {1}
    assert simulate(trace, SERVICE, SimConfig(latency_slo_s=2.0), OraclePolicy(need, 3.0)).violations == 0
    # Sizing each second from its rate alone asks for more at the burst.
    assert max(need_per_second(trace, 10.0, 1, 1.0, 0.99, 20)) > 1


def test_sustained_overload_gets_the_replicas_it_needs_and_no_request_misses() -> None:
    trace = sorted(evenly(0.0, 60.0, 2.0) + evenly(30.0, 50.0, 35.0), key=lambda r: r.arrival_s)
    need = clairvoyant_need(trace, SERVICE, slo_s=1.0, max_replicas=20)
    assert need[:25] == [1] * 25
    assert 4 <= max(need[30:50]) <= 5  # 37 req/s at 10 req/s per replica, some queueing allowed
    assert need[-5:] == [1] * 5
    cfg = SimConfig(latency_slo_s=1.0, startup_delay_s=5.0)
    oracle = simulate(trace, SERVICE, cfg, OraclePolicy(need, startup_delay_s=5.0))
    assert oracle.violations == 0
    rate_sized = simulate(
        trace, SERVICE, cfg, OraclePolicy(need_per_second(trace, 10.0, 1, 0.5, 0.99, 20), 5.0)
    )
    assert oracle.gpu_hours < rate_sized.gpu_hours


def test_need_counts_instances_per_replica_and_respects_the_floor() -> None:
    trace = evenly(0.0, 10.0, 35.0)
    one = clairvoyant_need(trace, SERVICE, slo_s=1.0)
    two = clairvoyant_need(trace, SERVICE, slo_s=1.0, instances=2)
    assert max(two) < max(one)
    assert min(clairvoyant_need(trace, SERVICE, slo_s=1.0, min_replicas=6)) == 6
    assert clairvoyant_need([], SERVICE, slo_s=1.0, min_replicas=2) == [2]
    with pytest.raises(ValueError, match="min_replicas=0"):
        clairvoyant_need(trace, SERVICE, slo_s=1.0, min_replicas=0)


def test_fewest_static_replicas_is_the_smallest_count_without_violations() -> None:
    trace = sorted(evenly(0.0, 60.0, 2.0) + evenly(30.0, 50.0, 35.0), key=lambda r: r.arrival_s)
    cfg = SimConfig(latency_slo_s=1.0)
    n = fewest_static_replicas(trace, SERVICE, cfg)

    def violations(replicas: int) -> int:
        start = replace(cfg, initial_replicas=replicas)
        return simulate(trace, SERVICE, start, StaticPolicy(replicas)).violations

    assert violations(n) == 0
    assert violations(n - 1) > 0
