"""Operator metrics: decisions, reconcile latency and errors land in the registry."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from modelpool.scaling import VariantMetrics, decide
from modelpool.scaling.metrics import REGISTRY, observe_reconcile, record_decision
from unit.scaling.helpers import NOW, one, steady


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_record_decision_counts_actions_and_sets_gauges() -> None:
    before = _value("modelpool_scaling_decisions_total", pool="pool", variant="small", action="up") or 0.0
    decision = decide(one(steady(40.0)), NOW)
    desired = decision.pools["pool"].variant("small").desired_replicas
    assert desired > 1
    record_decision(decision)
    assert (
        _value("modelpool_scaling_decisions_total", pool="pool", variant="small", action="up") == before + 1
    )
    assert _value("modelpool_scaling_desired_replicas", pool="pool", variant="small") == desired
    assert _value("modelpool_scaling_demand_rps", pool="pool", variant="small") == pytest.approx(40.0)
    held_before = (
        _value("modelpool_scaling_decisions_total", pool="pool", variant="small", action="hold") or 0.0
    )
    record_decision(decide(one(VariantMetrics()), NOW))
    assert (
        _value("modelpool_scaling_decisions_total", pool="pool", variant="small", action="hold")
        == held_before + 1
    )
    assert b"modelpool_scaling_shortfall_rps" in generate_latest(REGISTRY)


def test_observe_reconcile_times_and_counts_errors() -> None:
    count = _value("modelpool_reconcile_duration_seconds_count", controller="test") or 0.0
    with observe_reconcile("test"):
        pass
    with pytest.raises(KeyError), observe_reconcile("test"):
        raise KeyError("boom")
    assert _value("modelpool_reconcile_duration_seconds_count", controller="test") == count + 2
    assert _value("modelpool_reconcile_errors_total", controller="test", kind="KeyError") == 1.0
