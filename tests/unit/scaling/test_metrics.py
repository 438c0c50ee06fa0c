"""Operator metrics: decisions, reconcile latency and errors land in the registry, labelled by
namespace, and the series of pools and variants that are gone are removed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import generate_latest

from modelpool.scaling import VariantMetrics, decide
from modelpool.scaling.metrics import REGISTRY, forget_pool, observe_reconcile, record_pool
from modelpool.scaling.types import PoolDecision
from unit.scaling.helpers import NOW, one, steady


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _pool(metrics: VariantMetrics) -> PoolDecision:
    return decide(one(metrics), NOW).pools["pool"]


def _series_of(namespace: str, pool: str) -> list[str]:
    """Exposition lines that carry this pool's labels."""
    text = generate_latest(REGISTRY).decode()
    return [line for line in text.splitlines() if f'namespace="{namespace}",pool="{pool}"' in line]


def test_record_pool_counts_actions_and_sets_gauges() -> None:
    labels = {"namespace": "ns-count", "pool": "pool", "variant": "small"}
    before = _value("modelpool_scaling_decisions_total", action="up", **labels) or 0.0
    decision = _pool(steady(40.0))
    desired = decision.variant("small").desired_replicas
    assert desired > 1
    record_pool("ns-count", "pool", decision)
    assert _value("modelpool_scaling_decisions_total", action="up", **labels) == before + 1
    assert _value("modelpool_scaling_desired_replicas", **labels) == desired
    assert _value("modelpool_scaling_demand_rps", **labels) == pytest.approx(40.0)
    held_before = _value("modelpool_scaling_decisions_total", action="hold", **labels) or 0.0
    record_pool("ns-count", "pool", _pool(VariantMetrics()))
    assert _value("modelpool_scaling_decisions_total", action="hold", **labels) == held_before + 1
    assert b"modelpool_scaling_shortfall_rps" in generate_latest(REGISTRY)


def test_pools_of_one_name_in_two_namespaces_have_their_own_series() -> None:
    record_pool("ns-a", "same", _pool(steady(40.0)))
    record_pool("ns-b", "same", _pool(steady(1.0)))
    a = _value("modelpool_scaling_demand_rps", namespace="ns-a", pool="same", variant="small")
    b = _value("modelpool_scaling_demand_rps", namespace="ns-b", pool="same", variant="small")
    assert a == pytest.approx(40.0)
    assert b == pytest.approx(1.0)


def test_a_deleted_pool_leaves_no_series_and_other_pools_keep_theirs() -> None:
    record_pool("ns-del", "gone", _pool(steady(40.0)))
    record_pool("ns-del", "kept", _pool(steady(40.0)))
    assert len(_series_of("ns-del", "gone")) == 6  # 4 gauges + decisions_total{action=up} + its _created
    forget_pool("ns-del", "gone")
    assert _series_of("ns-del", "gone") == []
    assert _value("modelpool_scaling_desired_replicas", namespace="ns-del", pool="kept", variant="small")
    forget_pool("ns-del", "never-recorded")  # nothing to remove: no error


def test_a_variant_removed_from_the_pool_loses_its_series() -> None:
    decision = _pool(steady(40.0))
    small = decision.variant("small")
    large = replace(small, name="large")
    record_pool("ns-var", "pool", replace(decision, variants=(small, large)))
    assert _value("modelpool_scaling_desired_replicas", namespace="ns-var", pool="pool", variant="large")
    record_pool("ns-var", "pool", decision)
    lines = _series_of("ns-var", "pool")
    assert lines and not [line for line in lines if 'variant="large"' in line]
    assert _value("modelpool_scaling_desired_replicas", namespace="ns-var", pool="pool", variant="small")


def test_observe_reconcile_times_and_counts_errors() -> None:
    count = _value("modelpool_reconcile_duration_seconds_count", controller="test") or 0.0
    with observe_reconcile("test"):
        pass
    with pytest.raises(KeyError), observe_reconcile("test"):
        raise KeyError("boom")
    assert _value("modelpool_reconcile_duration_seconds_count", controller="test") == count + 2
    assert _value("modelpool_reconcile_errors_total", controller="test", kind="KeyError") == 1.0
