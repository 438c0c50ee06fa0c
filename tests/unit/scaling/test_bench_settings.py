"""The autoscaling benchmark runs the settings a ModelPool gives the operator, not its own.

For each operating point the docs report, a ModelPool spec (the bursty samples: for a 0.5 s and
for a 2 s scrape) must give the scaler exactly the settings, decision interval and series the
benchmark simulates.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.scaling_planner import ScalingPlanner, settings_for
from modelpool.scaling.simulator import ServiceModel, TraceRequest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "bench"))  # the bench's modules import each other by name
import bench_autoscaling as bench  # noqa: E402

URL = "http://prometheus:9090"
IRATE = "sum(irate(nv_inference_request_success{$selector}[$window]))"
ROUTER_IRATE = (
    "sum(irate(modelpool_router_upstream_requests_total{$router_selector}[$window])) + "
    "(sum(irate(modelpool_router_unavailable_requests_total{$router_selector}[$window])) or vector(0)) "
    "or sum(irate(modelpool_router_unavailable_requests_total{$router_selector}[$window]))"
)


def _bench_default_pool(slo_ms: int = 2000) -> dict[str, Any]:
    """The bench's default point (2 s scrape, the increase between the last two scrapes) as the
    sample for a 2 s scrape writes it, with the targets of another SLO where asked: irate queries
    over four scrapes, a target queue time of half the SLO."""
    sample = REPO / "manifests" / "samples" / "modelpool-bursty-2s-scrape.yaml"
    spec: dict[str, Any] = yaml.safe_load(sample.read_text())["spec"]
    assert spec["scaling"]["queries"] == {"servedRate": IRATE, "routerRate": ROUTER_IRATE}
    for variant in spec["variants"]:
        variant["scaling"] |= {"targetQueueTimeMs": slo_ms // 2, "targetLatencyMs": slo_ms}
    return spec


def _bursty_sample() -> dict[str, Any]:
    sample = REPO / "manifests" / "samples" / "modelpool-bursty.yaml"
    spec: dict[str, Any] = yaml.safe_load(sample.read_text())["spec"]
    return spec


POINTS = [
    pytest.param(_bench_default_pool(), 2.0, 2.0, 2.0, None, 8.0, id="default-2s-scrape"),
    pytest.param(_bench_default_pool(1000), 1.0, 2.0, 2.0, None, 8.0, id="default-2s-scrape-slo-1s"),
    pytest.param(_bench_default_pool(5000), 5.0, 2.0, 2.0, None, 8.0, id="default-2s-scrape-slo-5s"),
    pytest.param(_bursty_sample(), 2.0, 0.5, 2.0, 1.0, 2.0, id="fast-0.5s-scrape-sample"),
]


@pytest.mark.parametrize(("wire", "slo", "scrape", "rate_window", "decision", "promql_window"), POINTS)
def test_a_modelpool_reproduces_the_benchmarks_settings(
    wire: dict[str, Any],
    slo: float,
    scrape: float,
    rate_window: float,
    decision: float | None,
    promql_window: float,
) -> None:
    knobs = bench.Knobs(slo, 3.0, scrape, rate_window, None, (0.5,), 64, None, decision)
    trace = [TraceRequest(float(i), 800, 40) for i in range(3)]
    capacity, simulated, cfg = bench.sim_setup(trace, ServiceModel(0.0, 5e-5, 1e-4), knobs)
    spec = ModelPoolSpec.model_validate(wire)
    operator = settings_for(spec.variants[0])
    # What only names, bounds or prices the variant, and the staleness limit (the simulator's data
    # is never stale), may differ; every setting a decision reads must not.
    operator = replace(
        operator,
        name=simulated.name,
        max_replicas=simulated.max_replicas,
        capacity_per_replica_rps=capacity,
        stale_after_s=simulated.stale_after_s,
        priority=simulated.priority,
        cost=simulated.cost,
    )
    assert operator == simulated
    assert spec.scaling.interval_seconds == knobs.decision_every_s
    assert spec.scaling.rate_window_seconds == promql_window
    reader = ScalingPlanner(default_prometheus_url=None).reader(URL, spec)
    assert reader.step_s == scrape  # one point per scrape, as the simulator's series
    assert reader.series_span_s / reader.step_s == cfg.series_points
    irate = "irate(" in reader.templates.served_rate
    assert irate == (rate_window == scrape)  # a one-scrape rate is irate's; longer ones rate()'s
    # The trend test learns how many seconds each point counts: the simulator's window, or for
    # irate none, so the points' spacing (one scrape), which is the simulator's window too.
    for template in (reader.templates.served_rate, reader.templates.router_rate):
        window = reader.points_window_s(template)
        assert (window if window is not None else reader.step_s) == cfg.rate_window_s
