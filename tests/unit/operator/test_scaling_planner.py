"""The operator's scaling shell: CRD fields -> scaler settings, pacing, holds (fake metrics reader)."""

from __future__ import annotations

from typing import Any

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, VariantStatus
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import (
    ScalingPlanner,
    expected_overflow,
    settings_for,
    tier_order,
)
from modelpool.scaling.prometheus_reader import QueryTemplates, VariantTarget
from modelpool.scaling.types import RatePoint, VariantMetrics

URL = "http://127.0.0.1:9"


class FakeReader:
    """Returns canned metrics per Triton model name."""

    def __init__(self, by_model: dict[str, VariantMetrics]) -> None:
        self.by_model = by_model
        self.calls = 0

    async def read_variant(self, target: VariantTarget, at: float | None = None) -> VariantMetrics:
        self.calls += 1
        return self.by_model[target.model]

    async def aclose(self) -> None:
        return None


def _spec(**scaling: Any) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8},
            "scaling": {"intervalSeconds": 10, "rateWindowSeconds": 6, "prometheusURL": URL, **scaling},
            "variants": [
                {
                    "name": "large",
                    "tier": "large",
                    "model": {"name": "m-large", "repository": "/m"},
                    "cost": 20,
                    "maxReplicas": 3,
                    "scaling": {"capacityPerReplicaRps": 10},
                },
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "m-small", "repository": "/m"},
                    "minReplicas": 1,
                    "maxReplicas": 6,
                    "scaling": {"capacityPerReplicaRps": 10, "scaleDownStabilizationSeconds": 0},
                },
            ],
        }
    )


def _metrics(rps: float, now: float) -> VariantMetrics:
    series = tuple(RatePoint(now - 10 + i, rps) for i in range(11))
    return VariantMetrics(
        rate_series=series, queue_time_s=0.001, compute_time_s=0.01, pending_requests=0, newest_sample_t=now
    )


HELD = {"small": ReplicaPlan(1, "held"), "large": ReplicaPlan(1, "held")}


def _planner(reader: FakeReader) -> ScalingPlanner:
    planner = ScalingPlanner(default_prometheus_url=None)
    planner._readers[(URL, 6, QueryTemplates())] = reader  # type: ignore[assignment]
    return planner


def test_settings_mapping_and_order() -> None:
    spec = _spec()
    assert [v.name for v in tier_order(spec)] == ["small", "large"]
    small = settings_for(spec.variants[1])
    assert small.capacity_per_replica_rps == 10
    assert small.target_queue_time_s == 0.05
    assert small.tolerance == 0.1
    assert small.scale_down_stabilization_s == 0
    assert (small.lookahead_s, small.burst_reserve, small.burst_memory_s) == (10.0, True, 3600.0)
    tuned = settings_for(
        spec.variants[1].model_copy(
            update={
                "scaling": spec.variants[1].scaling.model_copy(
                    update={"lookahead_seconds": 5, "burst_reserve": False, "burst_memory_seconds": 600}
                )
            }
        )
    )
    assert (tuned.lookahead_s, tuned.burst_reserve, tuned.burst_memory_s) == (5.0, False, 600.0)
    profiled = settings_for(
        spec.variants[0].model_copy(
            update={"scaling": spec.variants[0].scaling.model_copy(update={"capacity_per_replica_rps": None})}
        ),
        42.0,
    )
    assert profiled.capacity_per_replica_rps == 42.0


def test_overflow_goes_to_the_next_tier() -> None:
    status = ModelPoolStatus(variants=[VariantStatus(name="small", tier="small", capacity_shortfall_rps=12)])
    assert expected_overflow(_spec(), status) == {"small": 0.0, "large": 12.0}


async def test_load_scales_up_and_is_paced_by_the_interval() -> None:
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    outcome = await planner.plan("ns", "p", _spec(), None, {"small": 1, "large": 1}, HELD, now=now)
    assert outcome.plans["small"].replicas >= 5
    assert outcome.metrics is not None and outcome.metrics.ok
    assert any(line.startswith("small 1->") for line in outcome.scaled)
    calls = reader.calls
    again = await planner.plan("ns", "p", _spec(), None, {"small": 5, "large": 1}, HELD, now=now + 3)
    assert again.plans == HELD and again.metrics is None  # not due: the last decision holds
    assert reader.calls == calls
    assert again.next_decision_in is not None and 6.9 < again.next_decision_in < 7.1


async def test_ready_replicas_reach_the_burst_reserve() -> None:
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(45.0, now), "m-large": _metrics(1.0, now)})
    planner = _planner(reader)
    await planner.plan("ns", "p", _spec(), None, {"small": 3, "large": 1}, HELD, now=now, ready={"small": 0})
    states = planner._states[("ns", "p")]
    assert states["small"].bursts.starts[-1].serving == 0  # 3 in the spec, none ready yet
    assert states["large"].bursts.starts[-1].serving == 1  # no ready count: the spec's


async def test_missing_metrics_hold_and_never_scale_down() -> None:
    now = 1_000.0
    reader = FakeReader(
        {
            "m-small": VariantMetrics(problem="metrics missing: unreachable"),
            "m-large": VariantMetrics(problem="x"),
        }
    )
    outcome = await _planner(reader).plan("ns", "p", _spec(), None, {"small": 4, "large": 2}, HELD, now=now)
    assert outcome.plans["small"].replicas == 4
    assert outcome.plans["large"].replicas == 2
    assert outcome.metrics is not None and not outcome.metrics.ok
    assert outcome.metrics.reason == "MetricsUnavailable"


async def test_disabled_and_unconfigured() -> None:
    planner = ScalingPlanner(default_prometheus_url=None)
    disabled = await planner.plan("ns", "p", _spec(enabled=False), None, {}, HELD, now=1.0)
    assert disabled.plans["small"].replicas == 1 and disabled.metrics is not None
    assert disabled.metrics.reason == "ScalingDisabled"
    spec = ModelPoolSpec.model_validate({**_spec().to_wire(), "scaling": {"intervalSeconds": 10}})
    unconfigured = await planner.plan("ns", "p", spec, None, {}, HELD, now=1.0)
    assert unconfigured.plans == HELD
    assert unconfigured.metrics is not None and unconfigured.metrics.reason == "PrometheusNotConfigured"


def test_queries_from_the_pool_override_the_defaults() -> None:
    custom = "sum(rate(my_requests_total{$selector}[$window]))"
    spec = _spec(queries={"servedRate": custom})
    reader = ScalingPlanner(default_prometheus_url=None).reader(URL, spec.scaling)
    assert reader.templates.served_rate == custom
    assert reader.templates.pending == QueryTemplates().pending
    assert reader.rate_window_s == 6
