"""The observed rate is the larger of the router's arrival rate and Triton's served rate, each
used only while its own newest point is fresh (docs/scaling.md, *The algorithm*, step 2)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from modelpool.scaling import (
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantInput,
    VariantMetrics,
    VariantState,
    decide,
    demand,
)
from modelpool.scaling.prometheus_reader import PrometheusReader, VariantTarget

from .helpers import NOW, one, only, settings


def flat(rps: float, end: float = NOW, points: int = 8, step: float = 4.0) -> tuple[RatePoint, ...]:
    return tuple(RatePoint(end - step * (points - 1 - i), rps) for i in range(points))


def both(router: float, served: float, router_end: float = NOW, served_end: float = NOW) -> VariantMetrics:
    """Metrics as the reader returns them when it has the router's and Triton's series."""
    router_series = flat(router, router_end)
    return VariantMetrics(
        rate_series=router_series,
        router_rps=router_series[-1].rps,
        served_series=flat(served, served_end),
        queue_time_s=0.001,
        pending_requests=0.0,
        newest_sample_t=NOW,
        rate_window_s=4.0,
        served_window_s=4.0,
    )


def test_a_served_rate_above_a_partly_scraped_router_sizes_the_variant() -> None:
    """One router of several scraped says 5 req/s while Triton serves 800: the variant was scaled
    down 10 -> 1 on the router's 5 req/s before."""
    d = only(
        one(
            both(router=5.0, served=800.0),
            current=10,
            scale_down_stabilization_s=0,
            capacity_per_replica_rps=100.0,
            burst_reserve=False,
        )
    )
    assert not d.held
    assert d.desired_replicas >= 9, d.reason
    assert d.demand_rps == pytest.approx(800.0)
    assert "rate 800.0" in d.reason


def test_on_good_data_the_router_series_decides_as_before() -> None:
    """Replicas saturated: the router counts 60 arrivals, Triton serves 48. The decision is the one
    made from the router's series alone (as the benchmark's simulator feeds it)."""
    m = both(router=60.0, served=48.0)
    alone = replace(m, served_series=(), served_window_s=None)
    with_served = only(one(m, current=4))
    without = only(one(alone, current=4))
    assert with_served.desired_replicas == without.desired_replicas
    assert with_served.reason == without.reason
    assert with_served.demand_rps == pytest.approx(60.0)


def test_the_router_series_wins_a_tie_and_counts_arrivals() -> None:
    m = demand.observed_metrics(both(router=20.0, served=20.0), settings(), NOW)
    assert m.router_rps == 20.0
    assert m.served_series == ()
    assert m.rate_series == flat(20.0)


def test_the_larger_served_series_is_used_with_its_own_window() -> None:
    m = replace(both(router=5.0, served=50.0), served_window_s=None)  # irate served, rate() router
    used = demand.observed_metrics(m, settings(), NOW)
    assert used.rate_series == flat(50.0)
    assert used.rate_window_s is None
    assert used.router_rps is None  # the series counts served requests, not arrivals


@pytest.mark.parametrize(
    ("router_end", "served_end", "expected"),
    [
        # The router stopped being scraped 60 s ago at 800 req/s; Triton serves 5 now.
        (NOW - 60, NOW, 5.0),
        # Triton's series stopped 60 s ago at 800; the router counts 5 arrivals now.
        (NOW, NOW - 60, 5.0),
    ],
)
def test_a_stale_series_does_not_count(router_end: float, served_end: float, expected: float) -> None:
    router = 800.0 if router_end < NOW else 5.0
    served = 800.0 if served_end < NOW else 5.0
    m = demand.observed_metrics(
        both(router, served, router_end, served_end), settings(stale_after_s=30.0), NOW
    )
    assert m.latest_rps == expected
    assert m.served_series == ()


def test_a_lone_stale_rate_series_holds() -> None:
    """Triton's series alone (no router): its newest point 200 s old (the rate window no longer
    holds two samples) while another counter's newest sample is fresh. The freshness of each
    series was checked only with two series, so this one was used and scaled 10 -> 1."""
    old = flat(1.0, end=NOW - 200)
    m = VariantMetrics(
        rate_series=old,
        newest_sample_t=NOW,
        queue_time_s=0.001,
        pending_requests=0.0,
        step_s=4.0,
        scrape_interval_s=8.0,
    )
    previous = VariantState(replicas=10, decided_at=NOW - 400, recommendations=((NOW - 400, 10),))
    d = only(one(m, current=10, previous=previous, burst_reserve=False))
    assert d.held and d.desired_replicas == 10, d.reason
    assert d.reason == (
        "holding 10 replicas: metrics stale: the newest point of the rate series is older than "
        "staleAfter 30s plus a step"
    )
    # The router's and Triton's series both that old: the router's was used as well.
    both_old = replace(both(1.0, 1.0, NOW - 200, NOW - 200), step_s=4.0, scrape_interval_s=8.0)
    d = only(one(both_old, current=10, previous=previous, burst_reserve=False))
    assert d.held and d.desired_replicas == 10, d.reason
    # A step old, the series still counts (Prometheus aligns a subquery's points to the step).
    recent = replace(m, rate_series=flat(1.0, end=NOW - 30 - 4.0))
    assert demand.metrics_problem(recent, settings(), NOW) is None


def test_absurd_values_in_the_served_series_hold() -> None:
    previous = VariantState(replicas=7, decided_at=NOW - 10)
    m = replace(both(router=5.0, served=1.0), served_series=(RatePoint(NOW - 4, 1.0), RatePoint(NOW, -2.0)))
    d = only(one(m, current=5, previous=previous))
    assert d.held and d.desired_replicas == 7
    assert "metrics absurd: served rate is negative" in d.reason


def _answer(request: httpx.Request) -> httpx.Response:
    """A Prometheus whose router series says 4-5 req/s and Triton's 700-800."""
    q = request.url.params["query"]
    if q.startswith("(sum(rate(modelpool_router_upstream_requests_total"):
        result = [{"metric": {}, "values": [[100, "4"], [102, "5"]]}]
    elif q.startswith("(sum(rate(nv_inference_request_success"):
        result = [{"metric": {}, "values": [[100, "700"], [102, "800"]]}]
    elif "timestamp" in q:
        result = [{"metric": {}, "value": [104, "103.5"]}]
    elif "compute_infer" in q:
        result = [{"metric": {}, "value": [104, "0.01"]}]
    else:
        result = [{"metric": {}, "value": [104, "0"]}]
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "x", "result": result}})


def _reader() -> PrometheusReader:
    client = httpx.AsyncClient(transport=httpx.MockTransport(_answer))
    return PrometheusReader("http://prom.invalid", client=client, rate_window_s=2.0)


async def test_read_and_decided_the_variant_is_sized_for_what_triton_serves() -> None:
    """Reader and decision together, as the operator runs them: 10 -> 1 before."""
    m = await _reader().read_variant(VariantTarget(model="small", variant="small", pool="bank"))
    s = replace(settings(capacity_per_replica_rps=None), scale_down_stabilization_s=0.0, burst_reserve=False)
    pool = PoolInput("pool", (VariantInput(s, m, 10),))
    d = decide(ScalingInput.single(pool), 104.0).pools["pool"].variants[0]
    assert not d.held, d.reason
    assert d.desired_replicas >= 8, d.reason  # 800 req/s at 100 req/s per replica


async def test_the_reader_keeps_both_series() -> None:
    """Before, the reader kept the router's series only whenever it had one."""
    m = await _reader().read_variant(VariantTarget(model="small", variant="small", pool="bank"))
    assert m.problem is None
    assert [p.rps for p in m.rate_series] == [4.0, 5.0]
    assert m.router_rps == 5.0
    assert [p.rps for p in m.served_series] == [700.0, 800.0]
    assert m.served_window_s == 2.0
    assert demand.observed_metrics(m, settings(), 104.0).latest_rps == 800.0


def aligned(rps: float, newest: float, step: float, points: int = 8) -> tuple[RatePoint, ...]:
    """A subquery's points: multiples of ``step`` ending at ``newest``."""
    return tuple(RatePoint(newest - step * (points - 1 - i), rps) for i in range(points))


def test_a_series_of_a_long_window_counts_while_its_newest_point_is_a_step_old() -> None:
    """rateWindowSeconds 240: the reader's step is 60 s and its scrape at most 120 s, so the newest
    point of a series is up to 60 s old. At 45 s old, neither series counted as fresh (30 s), the
    router's 5 req/s (one router of several scraped) was used instead of Triton's 800, and the
    variant went 90 -> 2 (/tmp/scaling_review/r11_fresh_step.py)."""
    now = 10_045.0
    m = VariantMetrics(
        rate_series=aligned(5.0, 10_000.0, 60.0),
        router_rps=5.0,
        rate_window_s=240.0,
        served_series=aligned(800.0, 10_000.0, 60.0),
        served_window_s=240.0,
        newest_sample_t=now - 3,
        queue_time_s=0.0,
        pending_requests=0.0,
        step_s=60.0,
        scrape_interval_s=120.0,
    )
    assert demand.observed_metrics(m, settings(), now).latest_rps == 800.0
    d = only(one(m, current=90, max_replicas=100, scale_down_stabilization_s=0), now)
    assert not d.held, d.reason
    assert d.desired_replicas >= 81, d.reason
    # A step and a staleness limit later (60 + 180 s) the series no longer count: the router's is
    # kept, and the newest sample's age is metrics_problem's to judge.
    assert demand.observed_metrics(m, settings(), 10_000.0 + 241).latest_rps == 5.0


def test_the_staleness_limit_follows_the_step_and_the_scrape_interval() -> None:
    """30 s, or one scrape interval plus one step where the reader's series are sparser; without
    them (the benchmark's and the simulator's metrics) the setting alone, as before."""
    s = settings()
    assert demand.stale_after_s(VariantMetrics(), s) == 30.0
    assert demand.stale_after_s(VariantMetrics(step_s=0.5, scrape_interval_s=1.0), s) == 30.0
    assert demand.stale_after_s(VariantMetrics(step_s=15.0, scrape_interval_s=30.0), s) == 45.0
    assert demand.stale_after_s(VariantMetrics(step_s=60.0, scrape_interval_s=120.0), s) == 180.0
    assert demand.stale_after_s(VariantMetrics(step_s=60.0), settings(stale_after_s=90.0)) == 90.0


def test_a_60s_scrape_with_a_240s_window_holds_no_decision() -> None:
    """Decisions every 15 s at a 60 s scrape: the newest sample is 7-52 s old, and the decisions
    made while it was over 30 s old held, half of them (/tmp/scaling_review/r7_stale30.py: 20/40)."""
    held = 0
    for decision in range(0, 600, 15):
        now = 10_000.0 + decision + 7
        newest = 10_000.0 + 60 * ((decision + 7) // 60)
        m = VariantMetrics(
            rate_series=aligned(50.0, newest, 60.0, points=4),
            newest_sample_t=newest,
            step_s=60.0,
            scrape_interval_s=120.0,
        )
        d = only(one(m, current=2, max_replicas=8), now)
        held += d.held
        assert d.held or d.desired_replicas >= 6, d.reason
    assert held == 0


@pytest.mark.parametrize(
    ("router", "served", "partial"),
    [
        (None, 2.0, True),  # Triton's sum is the rate: a target missing undercounts it
        (120.0, 2.0, False),  # the router's arrivals are the rate: Triton's targets do not size it
        (1.5, 2.0, True),  # Triton's partial sum is still larger than the router's: it is used
    ],
)
def test_fewer_triton_targets_than_ready_replicas_never_scale_down_where_triton_sizes_the_variant(
    router: float | None, served: float, partial: bool
) -> None:
    base = (
        both(router, served)
        if router is not None
        else VariantMetrics(
            rate_series=flat(served), queue_time_s=0.001, pending_requests=0.0, newest_sample_t=NOW
        )
    )
    m = replace(base, triton_targets=1, expected_targets=2)
    assert demand.metrics_problem(m, settings(), NOW) is None  # a lower bound: it still decides
    problem = demand.partial_scrape(m, settings(), NOW)
    assert (problem is not None) == partial, problem
    if partial:
        assert problem == (
            "metrics partial: Triton's series come from 1 scrape target(s) for 2 ready replicas "
            "(a target down, or not scraped yet?), so the served rate misses the others' requests"
        )
        d = only(one(m, current=2, previous=VariantState(replicas=2, decided_at=NOW - 10)))
        assert not d.held and d.desired_replicas == 2, d.reason
        assert f"no scale-down: {problem}" in d.reason
    for complete in (
        replace(m, triton_targets=2),
        replace(m, triton_targets=3),
        replace(m, expected_targets=None),
    ):
        assert demand.partial_scrape(complete, settings(), NOW) is None


def test_a_partial_triton_scrape_still_scales_up() -> None:
    """What the targets that are scraped serve is a lower bound of the variant's demand: where it
    alone needs more replicas, they are ordered (a hold would leave a surge unserved)."""
    m = VariantMetrics(
        rate_series=flat(400.0),
        queue_time_s=0.001,
        pending_requests=0.0,
        newest_sample_t=NOW,
        triton_targets=1,
        expected_targets=2,
    )
    assert demand.partial_scrape(m, settings(), NOW) is not None
    d = only(one(m, current=2, max_replicas=64, previous=VariantState(replicas=2, decided_at=NOW - 10)))
    assert not d.held and d.desired_replicas > 2, d.reason
    assert "no scale-down" not in d.reason
