"""Which series a variant's decision reads, how old they may be, and whether all of its pods' are
there: the operator's planner, its real reader and ``decide`` against a fake Prometheus that selects
labelled series as Prometheus does (``fake_prometheus.LabelledSeries``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.pool_status import ReplicaPlan
from modelpool.controllers.scaling_planner import ScalingOutcome, ScalingPlanner

from .fake_prometheus import FakePrometheus, LabelledSeries, Series

NOW = 1_000_000.0
TRITON = "nv_inference_request_success"
PENDING = "nv_inference_pending_request_count"
ROUTER = "modelpool_router_upstream_requests_total"


def pod(instance: str, rps: float, newest_t: float = NOW, **labels: str) -> tuple[Series, Series]:
    """One Triton pod's served counter and pending gauge (model ``llama``), with ``labels``."""
    own = {"model": "llama", "instance": instance, **labels}
    return Series(TRITON, own, rps=rps, newest_t=newest_t), Series(PENDING, own, value=0.0, newest_t=newest_t)


def labelled(pool: str, variant: str, namespace: str = "prod") -> dict[str, str]:
    """The target labels the chart's Triton PodMonitor attaches to a variant's pod."""
    return {"modelpool_dev_pool": pool, "modelpool_dev_variant": variant, "namespace": namespace}


def router(rps: float, variant: str, newest_t: float = NOW, pool: str = "chat") -> Series:
    labels = {"pool": pool, "variant": variant, "namespace": "prod"}
    return Series(ROUTER, labels, rps=rps, newest_t=newest_t)


def variant(name: str, tier: str, **scaling: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tier": tier,
        "model": {"name": "llama", "repository": "/m"},
        "maxReplicas": 100,
        "scaling": {"capacityPerReplicaRps": 10, "scaleDownStabilizationSeconds": 0, **scaling},
    }


def spec(url: str, *variants: dict[str, Any], **scaling: Any) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 1000},
            "scaling": {"intervalSeconds": 15, "rateWindowSeconds": 8, "prometheusURL": url, **scaling},
            "variants": list(variants),
        }
    )


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with FakePrometheus().serving() as fake:
        yield fake


async def plan(
    pool_spec: ModelPoolSpec,
    current: Mapping[str, int],
    ready: Mapping[str, int] | None = None,
    name: str = "chat",
) -> ScalingOutcome:
    planner = ScalingPlanner(default_prometheus_url=None)
    held = {v.name: ReplicaPlan(current[v.name], "held") for v in pool_spec.variants}
    try:
        return await planner.plan("prod", name, pool_spec, None, current, held, now=NOW, ready=ready)
    finally:
        await planner.close()


# 1. Triton's series are selected by the variant's own pods, not by the model name alone.


async def test_two_variants_of_one_model_read_only_their_own_pods(prometheus: FakePrometheus) -> None:
    """small and large both load ``llama``; small's two pods serve 60 req/s, large's one 2 req/s.
    Selected by model name, large read 62 req/s and went 1 -> 7 (and small read 62 too)."""
    prometheus.answer = LabelledSeries(
        [
            *pod("10.0.0.1:8002", 30.0, **labelled("chat", "small")),
            *pod("10.0.0.2:8002", 30.0, **labelled("chat", "small")),
            *pod("10.0.0.3:8002", 2.0, **labelled("chat", "large")),
        ],
        NOW,
    )
    pool = spec(prometheus.url, variant("small", "small"), variant("large", "large"))
    outcome = await plan(pool, {"small": 7, "large": 1}, ready={"small": 2, "large": 1})
    large, small = outcome.plans["large"], outcome.plans["small"]
    assert outcome.metrics is not None and outcome.metrics.ok, outcome.metrics
    assert large.replicas == 1, large.reason
    assert "rate 2.0" in large.reason
    assert "rate 60.0" in small.reason


async def test_two_pools_of_one_namespace_serving_one_model_read_only_their_own(
    prometheus: FakePrometheus,
) -> None:
    """Pool ``chat`` and pool ``code`` in one namespace both serve ``llama`` from a variant named
    small: chat reads its 4 req/s, not code's 40 besides."""
    prometheus.answer = LabelledSeries(
        [
            *pod("10.0.0.1:8002", 4.0, **labelled("chat", "small")),
            *pod("10.0.0.9:8002", 40.0, **labelled("code", "small")),
        ],
        NOW,
    )
    outcome = await plan(spec(prometheus.url, variant("small", "small")), {"small": 1})
    assert outcome.plans["small"].replicas == 1, outcome.plans["small"].reason
    assert "rate 4.0" in outcome.plans["small"].reason


async def test_series_without_pool_and_variant_labels_still_count(prometheus: FakePrometheus) -> None:
    """A static scrape config attaches neither label: its series count for every variant of that
    model name, as before (so nothing breaks where the labels are not attached)."""
    answer = LabelledSeries(
        [*pod("127.0.0.1:8002", 25.0), *pod("10.0.0.3:8002", 2.0, **labelled("chat", "large"))], NOW
    )
    prometheus.answer = answer
    pool = spec(prometheus.url, variant("small", "small"), variant("large", "large"))
    outcome = await plan(pool, {"small": 3, "large": 3})
    assert "rate 25.0" in outcome.plans["small"].reason  # the unlabelled pod's, not large's
    assert "rate 27.0" in outcome.plans["large"].reason  # its own and the unlabelled pod's
    assert any('modelpool_dev_variant=~"large|"' in q for q in answer.queries)


# 2. How old a healthy sample may be follows the series' step and the scrape interval.


def aligned_now(step: float, age: float) -> float:
    """A time whose newest subquery point (a multiple of ``step``) is ``age`` seconds old."""
    return (NOW // step) * step + age


async def test_a_long_rate_window_uses_triton_when_its_newest_point_is_older_than_30s(
    prometheus: FakePrometheus,
) -> None:
    """rateWindowSeconds 240: the subquery step is 60 s, so the newest point is 0-60 s old while the
    newest sample (a 15 s scrape) is fresh. At 45 s neither rate series counted as fresh, the
    router's 5 req/s (one router of several scraped) was used instead of Triton's 800, and the
    variant went 90 -> 2."""
    now = aligned_now(60.0, 45.0)
    prometheus.answer = LabelledSeries(
        [
            *pod("10.0.0.1:8002", 800.0, newest_t=now - 3, **labelled("chat", "small")),
            router(5.0, "small", now - 3),
        ],
        now,
    )
    pool = spec(prometheus.url, variant("small", "small"), rateWindowSeconds=240)
    planner = ScalingPlanner(default_prometheus_url=None)
    held = {"small": ReplicaPlan(90, "held")}
    try:
        outcome = await planner.plan("prod", "chat", pool, None, {"small": 90}, held, now=now)
    finally:
        await planner.close()
    small = outcome.plans["small"]
    assert outcome.metrics is not None and outcome.metrics.ok, outcome.metrics
    assert small.replicas >= 81, small.reason
    assert "rate 800.0" in small.reason


async def test_a_60s_scrape_with_a_long_window_never_holds_for_staleness(prometheus: FakePrometheus) -> None:
    """A 60 s scrape (Prometheus' default) with rateWindowSeconds 240, decisions every 15 s: the
    newest sample is 0-60 s old, and every decision made while it was over 30 s old held (20 of
    40). 50 req/s on 2 replicas of 10 req/s must scale up at each decision."""
    pool = spec(prometheus.url, variant("small", "small"), rateWindowSeconds=240)
    held_count = 0
    for decision in range(12):
        now = aligned_now(60.0, 0.0) + 7 + 15 * decision
        scraped = (now // 60) * 60
        prometheus.answer = LabelledSeries(
            [*pod("10.0.0.1:8002", 50.0, newest_t=scraped, **labelled("chat", "small"))], now
        )
        planner = ScalingPlanner(default_prometheus_url=None)
        try:
            outcome = await planner.plan(
                "prod", "chat", pool, None, {"small": 2}, {"small": ReplicaPlan(2, "held")}, now=now
            )
        finally:
            await planner.close()
        assert outcome.metrics is not None
        held_count += not outcome.metrics.ok
        assert outcome.plans["small"].replicas >= 6 or not outcome.metrics.ok, outcome.plans["small"].reason
    assert held_count == 0


async def test_a_stopped_prometheus_still_holds(prometheus: FakePrometheus) -> None:
    """The longer limit still has one: with rateWindowSeconds 8 (a scrape of at most 4 s, a step of
    2 s) a newest sample 31 s old holds, as before."""
    prometheus.answer = LabelledSeries(
        [*pod("10.0.0.1:8002", 1.0, newest_t=NOW - 31, **labelled("chat", "small"))], NOW
    )
    outcome = await plan(spec(prometheus.url, variant("small", "small")), {"small": 4})
    assert outcome.metrics is not None and not outcome.metrics.ok
    assert "metrics stale: newest sample older than staleAfter 30s" in outcome.metrics.message
    assert outcome.plans["small"].replicas == 4


# 3. A partial Triton scrape (some of the variant's targets down) never scales down.

ROOMY = {"capacityPerReplicaRps": 100, "targetQueueTimeMs": 500}
"""120 req/s need 2 replicas, 60 need 1."""


async def test_a_partial_triton_scrape_does_not_scale_down(prometheus: FakePrometheus) -> None:
    """Two ready replicas serve 60 req/s each (of 100 each); one's scrape target is down, so
    Triton's sum says 60 and the newest sample stays fresh (the other pod's). Without a router the
    variant went 2 -> 1. It is a lower bound of the demand: it decides, upwards only."""
    both = [
        *pod("10.0.0.1:8002", 60.0, **labelled("chat", "small")),
        *pod("10.0.0.2:8002", 60.0, **labelled("chat", "small")),
    ]
    pool = spec(prometheus.url, variant("small", "small", **ROOMY, scaleDownStabilizationSeconds=0))
    prometheus.answer = LabelledSeries(both, NOW)
    complete = await plan(pool, {"small": 2}, ready={"small": 2})
    assert complete.metrics is not None and complete.metrics.ok, complete.metrics
    assert complete.plans["small"].replicas == 2, complete.plans["small"].reason

    prometheus.answer = LabelledSeries(both[:2], NOW)  # the second pod's target is down
    partial = await plan(pool, {"small": 2}, ready={"small": 2})
    small = partial.plans["small"]
    assert small.replicas == 2, small.reason
    assert partial.metrics is not None and partial.metrics.ok  # not a hold: it could scale up
    assert (
        "no scale-down: metrics partial: Triton's series come from 1 scrape target(s) for 2 ready replicas"
        in small.reason
    )


async def test_a_partial_triton_scrape_does_not_hold_when_the_router_rate_is_used(
    prometheus: FakePrometheus,
) -> None:
    """With the router's fresh arrival rate (120 req/s) the decision does not rest on Triton's sum:
    a target down does not hold it."""
    pool = spec(prometheus.url, variant("small", "small", **ROOMY))
    prometheus.answer = LabelledSeries(
        [*pod("10.0.0.1:8002", 60.0, **labelled("chat", "small")), router(120.0, "small")], NOW
    )
    outcome = await plan(pool, {"small": 2}, ready={"small": 2})
    assert outcome.metrics is not None and outcome.metrics.ok, outcome.metrics
    assert outcome.plans["small"].replicas == 2, outcome.plans["small"].reason
    assert "rate 120.0" in outcome.plans["small"].reason


async def test_the_targets_are_counted_only_where_a_partial_scrape_can_hide(
    prometheus: FakePrometheus,
) -> None:
    """One ready replica: a target down leaves no Triton series at all, which the other checks see,
    so no count query is sent; nor without the ready count (the CLI) or with a servedRate
    override (it may read other series)."""
    answer = LabelledSeries([*pod("10.0.0.1:8002", 8.0, **labelled("chat", "small"))], NOW)
    prometheus.answer = answer
    await plan(spec(prometheus.url, variant("small", "small")), {"small": 1}, ready={"small": 1})
    await plan(spec(prometheus.url, variant("small", "small")), {"small": 2})
    override = {"servedRate": "sum(rate(nv_inference_request_success{$selector}[$window]))*1"}
    await plan(
        spec(prometheus.url, variant("small", "small"), queries=override), {"small": 2}, ready={"small": 2}
    )
    assert not any(q.startswith("count(") for q in answer.queries)
    await plan(spec(prometheus.url, variant("small", "small")), {"small": 2}, ready={"small": 2})
    assert any(q.startswith("count(count by (instance)") for q in answer.queries)
