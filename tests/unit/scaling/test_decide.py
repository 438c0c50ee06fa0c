"""Every decision rule of modelpool.scaling.decide, one test each."""

from __future__ import annotations

import builtins
import math
import random
from dataclasses import replace

import pytest

from modelpool.scaling import (
    PoolInput,
    RatePoint,
    ScalingInput,
    SettingsError,
    VariantInput,
    VariantMetrics,
    VariantState,
    decide,
    demand,
)
from modelpool.scaling.demand import trend_slope
from unit.scaling.helpers import NOW, one, only, ramp, settings, steady


def test_sizes_for_demand_with_headroom() -> None:
    d = only(one(steady(20.0)))
    # 20 req/s at 10 req/s per replica needs more than 2 replicas to keep the queue tail short.
    assert d.desired_replicas == 3
    assert d.changed
    assert d.reason.startswith("scale up 1->3: demand 20.0 req/s")


def test_fast_scale_up_jumps_straight_to_need() -> None:
    d = only(one(steady(80.0), current=1))
    assert d.desired_replicas >= 9
    assert d.desired_replicas == d.wished_replicas


def test_rising_trend_is_met_early() -> None:
    flat = only(one(steady(30.0)))
    rising = only(one(ramp(10.0, 30.0)))
    assert rising.desired_replicas > flat.desired_replicas
    assert "trend +" in rising.reason


def test_a_rise_within_the_noise_is_no_trend() -> None:
    # Counts that jump about with a slight upward tilt: the least-squares slope is positive
    # (+0.4/s) but its standard error is larger, so nothing is extrapolated.
    rates = (20.0, 4.0, 30.0, 6.0, 28.0)
    series = tuple(RatePoint(NOW - 5.0 * (4 - i), r) for i, r in enumerate(rates))
    noisy = VariantMetrics(rate_series=series, newest_sample_t=NOW)
    assert trend_slope(series, 20.0) == 0.0
    d = only(one(noisy, trend_window_s=20.0))
    assert "trend" not in d.reason
    assert d.demand_rps == 28.0  # the newest rate, nothing projected on top


def test_a_noisy_but_clear_rise_is_a_trend() -> None:
    rates = (10.0, 16.0, 18.0, 26.0, 30.0)  # +1.0/s with some scatter: t = 11 > 2.35
    series = tuple(RatePoint(NOW - 5.0 * (4 - i), r) for i, r in enumerate(rates))
    assert trend_slope(series, 20.0) == pytest.approx(1.0)
    d = only(one(VariantMetrics(rate_series=series, newest_sample_t=NOW), trend_window_s=20.0))
    assert "trend +1.00/s" in d.reason


def _overlapping_rates(
    counts: list[int], step_s: float = 0.5, window_s: float = 2.0
) -> tuple[RatePoint, ...]:
    """What Prometheus returns for ``rate(...[2s])`` read every 0.5 s: the requests of the last
    ``window_s`` over ``window_s``, one point per ``step_s``, from requests counted per step."""
    per_window = round(window_s / step_s)
    return tuple(
        RatePoint(NOW - step_s * (len(counts) - end), sum(counts[end - per_window : end]) / window_s)
        for end in range(per_window, len(counts) + 1)
    )


def test_one_clump_in_overlapping_rate_windows_is_no_trend() -> None:
    # 6 req/s, then 11 requests in the last second where 6 were due: a clump within Poisson noise
    # (sd 2.4). Its 2 s rates read every 0.5 s rise smoothly (6, 6, 6, 7, 8.5), and a t-test on
    # their scatter around the line calls that a rise of +1.2/s; against the arrivals' own noise
    # it is none.
    series = _overlapping_rates([3] * 12 + [5, 6])
    assert [p.rps for p in series[-5:]] == [6.0, 6.0, 6.0, 7.0, 8.5]
    assert trend_slope(series, 2.0, rate_window_s=2.0) == 0.0


def test_a_burst_onset_in_overlapping_rate_windows_is_a_trend() -> None:
    series = _overlapping_rates([1] * 12 + [6, 10])  # 2 req/s, then 32 req/s in the last half second
    assert trend_slope(series, 2.0, rate_window_s=2.0) == pytest.approx(3.3)
    metrics = VariantMetrics(rate_series=series, newest_sample_t=NOW, rate_window_s=2.0)
    assert "trend +3.30/s" in only(one(metrics, trend_window_s=2.0)).reason


def test_a_steady_poisson_load_shows_a_trend_about_as_often_as_the_test_allows() -> None:
    # Poisson arrivals at 6 req/s, read as the fast operating point reads them; the test is one-sided
    # at 95 %, so about 5 % of the decisions may see a trend (the t-test on the scatter saw 19 %).
    rng = random.Random(7)
    counts = [_poisson(rng, 3.0) for _ in range(4000)]
    seen = [trend_slope(_overlapping_rates(counts[end - 12 : end]), 2.0, 2.0) > 0 for end in range(20, 4000)]
    assert 0.02 <= sum(seen) / len(seen) <= 0.07


def test_the_trend_test_sums_only_the_points_whose_rate_windows_overlap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slope's variance summed over every pair of points, O(n^2): at the CRD's extremes (a 2 s
    rate window, so a 0.5 s step, and a 3600 s trend window) 7,200 points took 8.6 s per variant on
    the operator's event loop. Only pairs within one rate window of each other add to it; this
    counts the pair terms computed (each is one ``max``) for 900 s of trend: 3,240,000 before."""
    n, step, window = 1800, 0.5, 2.0
    series = tuple(RatePoint(1000.0 + step * i, 10.0 + 0.001 * i) for i in range(n))
    calls = [0]

    def counting_max(*args: float) -> float:
        calls[0] += 1
        return builtins.max(*args)

    monkeypatch.setattr(demand, "max", counting_max, raising=False)
    demand.trend_slope(series, 900.0, window)
    assert 0 < calls[0] <= n * (2 * window / step + 1), f"{calls[0]} terms for {n} points"


@pytest.mark.parametrize("seed", range(20))
def test_the_banded_overlap_sum_is_the_full_double_sum_exactly(seed: int) -> None:
    """Summing only the pairs that overlap, in the same order, gives the same float as the sum
    over every pair (the terms left out are zeros): the decisions do not move by a bit."""
    rng = random.Random(seed)
    t, xs = rng.uniform(0, 2e9), []
    for _ in range(rng.randint(1, 300)):
        t += rng.choice((0.0, 0.5, 0.5, 2.0, rng.uniform(0.0, 3.0)))  # repeats, the step, gaps
        xs.append(t)
    weights = [rng.uniform(-1e-3, 1e-3) for _ in xs]
    window = rng.choice((2.0, 0.5, rng.uniform(0.1, 5.0)))
    full = sum(
        wi * wj * max(0.0, window - abs(xi - xj))
        for wi, xi in zip(weights, xs, strict=True)
        for wj, xj in zip(weights, xs, strict=True)
    )
    assert demand.overlap_sum(weights, xs, window) == full
    shuffled = rng.sample(range(len(xs)), len(xs))  # not in time order: every pair, as before
    ws, ts = [weights[i] for i in shuffled], [xs[i] for i in shuffled]
    assert demand.overlap_sum(ws, ts, window) == sum(
        wi * wj * max(0.0, window - abs(xi - xj))
        for wi, xi in zip(ws, ts, strict=True)
        for wj, xj in zip(ws, ts, strict=True)
    )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's product of uniforms; fine for small means)."""
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def test_falling_trend_is_ignored() -> None:
    flat = only(one(steady(30.0), current=4))
    falling = only(one(ramp(60.0, 30.0), current=4))
    assert falling.desired_replicas == flat.desired_replicas


def test_backlog_of_pending_requests_adds_demand() -> None:
    base = only(one(steady(10.0)))
    backlog = only(one(steady(10.0, pending_requests=100.0), backlog_drain_s=5.0))
    assert backlog.desired_replicas > base.desired_replicas
    assert "backlog 20.0" in backlog.reason


def _with_ready(metrics: VariantMetrics, current: int, ready: int | None, **kw: object) -> ScalingInput:
    vi = VariantInput(settings(**kw), metrics, current, None, ready_replicas=ready)
    return ScalingInput.single(PoolInput("pool", (vi,)))


def test_a_backlog_the_ready_replicas_drain_in_time_adds_no_replica() -> None:
    # Two ready replicas of 10 req/s under 10 req/s: 8 waiting requests are served within 0.4 s,
    # under the 0.5 s target, long before a replica ordered now could start.
    drained = only(_with_ready(steady(10.0, pending_requests=8.0), current=2, ready=2))
    assert drained.desired_replicas == 2
    assert "the backlog of 8 drains in 0.40s (<= target 0.5s) on the 2 ready: none added for it" in (
        drained.reason
    )
    assert drained.demand_rps == pytest.approx(10.0)  # the budget sees no backlog either
    # It still adds replicas when only one of the two is ready, when the backlog outlasts the
    # target (12 requests: 0.6 s), or when the rate to come is more than the ready replicas serve.
    for inp, backlog in (
        (_with_ready(steady(10.0, pending_requests=8.0), current=2, ready=1), "backlog 8.0"),
        (_with_ready(steady(10.0, pending_requests=12.0), current=2, ready=2), "backlog 12.0"),
        (_with_ready(replace(ramp(2.0, 10.0), pending_requests=8.0), current=2, ready=2), "backlog 8.0"),
    ):
        d = only(inp)
        assert d.desired_replicas == 3, d.reason
        assert backlog in d.reason, d.reason


def test_a_backlog_keeps_a_scale_to_zero_tier_up() -> None:
    waiting = replace(steady(0.0, pending_requests=2.0), router_rps=0.0)
    d = only(_with_ready(waiting, current=1, ready=1, scale_to_zero=True, min_replicas=0))
    assert d.desired_replicas == 1, d.reason


def test_surge_for_backlog_is_not_remembered_by_scale_down_window() -> None:
    # The burst reserve would learn from this backlog (its own tests are in test_burst_reserve.py);
    # off here so that only the scale-down window is under test.
    first = only(
        one(steady(10.0, pending_requests=200.0), scale_down_stabilization_s=300.0, burst_reserve=False)
    )
    assert first.desired_replicas >= 20
    drained = one(
        steady(10.0, now=NOW + 10, pending_requests=0.0),
        current=first.desired_replicas,
        previous=first.state,
        scale_down_stabilization_s=300.0,
        burst_reserve=False,
    )
    after = only(drained, NOW + 10)
    assert after.desired_replicas == base_replicas_for(10.0)


def test_no_scale_down_while_requests_queue() -> None:
    m = steady(1.0, pending_requests=30.0)
    d = only(one(m, current=8, scale_down_stabilization_s=0.0, backlog_drain_s=60.0))
    assert d.desired_replicas == 8
    assert "no scale-down while 30 requests wait" in d.reason
    calm = only(one(steady(1.0, pending_requests=3.0), current=8, scale_down_stabilization_s=0.0))
    assert calm.desired_replicas < 8


def base_replicas_for(rps: float) -> int:
    return only(one(steady(rps))).desired_replicas


def test_router_rate_counts_when_triton_saturated() -> None:
    saturated = replace(steady(10.0), router_rps=40.0)
    d = only(one(saturated))
    assert d.demand_rps == pytest.approx(40.0)
    assert d.desired_replicas >= 5


def test_expected_load_from_routing_sizes_ahead() -> None:
    d = only(one(steady(5.0), extra=30.0))
    assert d.demand_rps == pytest.approx(35.0)
    assert "routing +30.0" in d.reason
    assert d.desired_replicas > only(one(steady(5.0))).desired_replicas


def test_queue_time_over_target_adds_a_replica_without_pending() -> None:
    m = replace(steady(5.0), queue_time_s=2.0)
    d = only(one(m, current=2))
    assert d.desired_replicas == 3
    assert "queue time 2.00s > target" in d.reason
    # With a live pending count of 0 the (lagging) average queue time is not acted on.
    drained = only(one(replace(m, pending_requests=0.0), current=2))
    assert drained.desired_replicas == 2


def test_no_scale_up_for_margin_while_no_queue_forms() -> None:
    # 8 req/s on one replica of 10 req/s: Erlang C wants a second one for its tail margin.
    assert only(one(steady(8.0), current=1)).desired_replicas >= 2
    calm = replace(steady(8.0), queue_time_s=0.002, pending_requests=1.0)
    kept = only(one(calm, current=1))
    assert kept.desired_replicas == 1
    assert "keeping 1: no queue forms (0.002s queued, 1 waiting)" in kept.reason
    # A queue that forms, a request waiting, demand beyond capacity, or no live pending count:
    # the margin is bought as before.
    for metrics in (
        replace(calm, queue_time_s=0.2),
        replace(calm, pending_requests=3.0),
        replace(steady(12.0), queue_time_s=0.002, pending_requests=1.0),
        replace(calm, pending_requests=None),
    ):
        assert only(one(metrics, current=1)).desired_replicas >= 2


def test_tolerance_keeps_current_near_capacity() -> None:
    from modelpool.scaling.queueing import max_rate_for_replicas

    servable = max_rate_for_replicas(4, 10.0, 1, 0.5, 0.99)
    near = only(one(steady(servable * 1.05), current=4, tolerance=0.1))
    assert near.desired_replicas == 4
    assert "within tolerance" in near.reason
    strict = only(one(steady(servable * 1.05), current=4, tolerance=0.0))
    assert strict.desired_replicas == 5


def test_scale_down_is_stabilised_by_window() -> None:
    first = only(one(steady(60.0), current=1, scale_down_stabilization_s=60.0), NOW)
    high = first.desired_replicas
    later = one(
        steady(5.0, now=NOW + 30), current=high, previous=first.state, scale_down_stabilization_s=60.0
    )
    held = only(later, NOW + 30)
    assert held.desired_replicas == high
    assert "scale-down stabilised" in held.reason
    after = one(steady(5.0, now=NOW + 70), current=high, previous=held.state, scale_down_stabilization_s=60.0)
    down = only(after, NOW + 70)
    assert down.desired_replicas < high
    assert down.reason.startswith(f"scale down {high}->")


def test_scale_up_stabilisation_window_takes_lowest() -> None:
    first = only(one(steady(5.0), current=1, scale_up_stabilization_s=30.0), NOW)
    burst = one(
        steady(80.0, now=NOW + 10),
        current=first.desired_replicas,
        previous=first.state,
        scale_up_stabilization_s=30.0,
    )
    d = only(burst, NOW + 10)
    assert d.desired_replicas == first.desired_replicas
    assert "scale-up stabilised" in d.reason


def test_min_and_max_replicas() -> None:
    assert (
        only(one(steady(0.0), current=3, min_replicas=2, scale_down_stabilization_s=0)).desired_replicas == 2
    )
    capped = only(one(steady(1000.0), max_replicas=6))
    assert capped.desired_replicas == 6
    assert "capped at maxReplicas 6" in capped.reason


def test_scale_to_zero_only_when_idle() -> None:
    def small_of(rps: float, **kw: object) -> int:
        small = VariantInput(settings("small", scale_down_stabilization_s=0.0, **kw), steady(rps), 1)
        large = VariantInput(settings("large"), steady(1.0), 1)
        pool = decide(ScalingInput.single(PoolInput("pool", (small, large))), NOW).pools["pool"]
        return pool.variant("small").desired_replicas

    assert small_of(0.0, scale_to_zero=True) == 0
    assert small_of(0.5, scale_to_zero=True) == 1
    assert small_of(0.0) == 1


def _pool(*variants: VariantInput) -> ScalingInput:
    return ScalingInput.single(PoolInput("pool", variants))


def test_last_tier_kept_when_all_would_scale_to_zero() -> None:
    kw = {"scale_to_zero": True, "scale_down_stabilization_s": 0.0}
    small = VariantInput(settings("small", **kw), steady(0.0), 1)
    large = VariantInput(settings("large", **kw), steady(0.0), 1)
    pool = decide(_pool(small, large), NOW).pools["pool"]
    assert pool.variant("small").desired_replicas == 0
    assert pool.variant("large").desired_replicas == 1
    assert "last tier serving" in pool.variant("large").reason


def test_scale_from_zero_on_router_traffic() -> None:
    m = VariantMetrics(rate_series=(), router_rps=12.0, newest_sample_t=NOW)
    d = only(one(m, current=0, scale_to_zero=True))
    assert d.desired_replicas >= 2


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        (VariantMetrics(), "metrics missing"),
        (steady(1.0, now=NOW - 100), "metrics stale"),
        (steady(float("nan")), "metrics absurd"),
        (steady(-3.0), "metrics absurd"),
        (replace(steady(1.0), queue_time_s=-1.0), "metrics absurd: queue time"),
        (steady(5e7), "metrics absurd: request rate"),
    ],
)
def test_bad_metrics_hold_and_never_scale_down(metrics: VariantMetrics, why: str) -> None:
    previous = VariantState(replicas=7, decided_at=NOW - 10)
    d = only(one(metrics, current=5, previous=previous))
    assert d.held
    assert d.desired_replicas == 7
    assert why in d.reason
    assert d.reason.startswith("holding 7 replicas")
    pool = decide(one(metrics, current=5, previous=previous), NOW).pools["pool"]
    assert pool.metrics_held
    assert why in pool.held_reason


def test_hold_without_previous_keeps_current() -> None:
    d = only(one(VariantMetrics(), current=4))
    assert d.held
    assert d.desired_replicas == 4


def test_unknown_capacity_with_demand_holds() -> None:
    m = steady(5.0)
    d = only(one(m, current=2, capacity_per_replica_rps=None))
    assert d.held
    assert "capacity unknown" in d.reason


def test_capacity_from_compute_time() -> None:
    m = replace(steady(20.0), compute_time_s=0.05)  # 20 req/s per instance
    d = only(one(m, capacity_per_replica_rps=None, instances_per_replica=2))
    assert d.capacity_per_replica_rps == pytest.approx(40.0)
    assert d.desired_replicas == 1


def test_deterministic() -> None:
    inp = one(ramp(3.0, 47.0), current=2)
    results = {repr(decide(inp, NOW)) for _ in range(5)}
    assert len(results) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_replicas", 0, "maxReplicas=0"),
        ("min_replicas", -1, "minReplicas=-1"),
        ("capacity_per_replica_rps", 0.0, "capacityPerReplicaRps=0.0"),
        ("slo_attainment", 1.0, "sloAttainment=1.0"),
        ("tolerance", 1.5, "tolerancePercent=150 must be in \\[0, 100\\)"),
        ("target_queue_time_s", 0.0, "targetQueueTimeSeconds=0.0"),
        ("latency_target_s", 0.0, "targetLatencyMs=0 must be > 0"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        decide(one(steady(1.0), **{field: value}), NOW)


def test_duplicate_names_rejected() -> None:
    v = VariantInput(settings("a"), steady(1.0), 1)
    with pytest.raises(ValueError, match="variant names must be unique"):
        decide(_pool(v, v), NOW)


def test_state_round_trip_keeps_history_bounded() -> None:
    state = None
    for i in range(50):
        t = NOW + 5 * i
        d = only(
            one(steady(10.0 + (i % 7), now=t), current=2, previous=state, scale_down_stabilization_s=30.0), t
        )
        state = d.state
    assert state is not None
    assert len(state.recommendations) <= 7
    assert all(t > NOW + 5 * 49 - 30 for t, _ in state.recommendations)
    assert not math.isnan(state.last_demand_rps)


def test_rate_point_series_order_used_for_latest() -> None:
    m = VariantMetrics(rate_series=(RatePoint(NOW - 5, 1.0), RatePoint(NOW, 9.0)), newest_sample_t=NOW)
    assert m.latest_rps == 9.0
