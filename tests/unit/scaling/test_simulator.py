"""Simulator and baselines on small hand-made traces (the decision code is the real one)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from modelpool.scaling import VariantSettings
from modelpool.scaling.baselines import (
    BurstForesightPolicy,
    HpaPolicy,
    OraclePolicy,
    ReactiveIdealPolicy,
    StaticPolicy,
    need_per_second,
)
from modelpool.scaling.simulator import (
    DecidePolicy,
    Observation,
    RatePoint,
    ServiceModel,
    SimConfig,
    TraceRequest,
    load_trace,
    reaction_times,
    simulate,
)

SERVICE = ServiceModel(0.1, 0.0, 0.0)  # 10 req/s per replica


def step_trace(
    low: float = 2.0, high: float = 30.0, switch: float = 60.0, end: float = 120.0
) -> list[TraceRequest]:
    out, t = [], 0.0
    while t < end:
        out.append(TraceRequest(t, 100, 10))
        t += 1.0 / (low if t < switch else high)
    return out


def test_static_enough_replicas_meet_slo_and_count_gpu_time() -> None:
    cfg = SimConfig(latency_slo_s=1.0, initial_replicas=5)
    r = simulate(step_trace(), SERVICE, cfg, StaticPolicy(5))
    assert r.requests == len(step_trace())
    assert r.attainment == 1.0
    assert r.gpu_hours == pytest.approx(5 * r.duration_s / 3600, rel=0.01)
    assert r.scale_actions == 0


def test_one_replica_overloads_and_requests_are_never_dropped() -> None:
    r = simulate(step_trace(), SERVICE, SimConfig(latency_slo_s=1.0), StaticPolicy(1))
    assert r.requests == len(step_trace())
    assert r.attainment < 0.6


def test_decide_policy_scales_up_fast_and_reacts_within_a_scrape() -> None:
    settings = VariantSettings(
        name="v", capacity_per_replica_rps=10.0, max_replicas=20, target_queue_time_s=0.5
    )
    cfg = SimConfig(latency_slo_s=1.0, startup_delay_s=2.0, scrape_interval_s=1.0, rate_window_s=3.0)
    trace = step_trace()
    r = simulate(trace, SERVICE, cfg, DecidePolicy(settings, 1.0))
    assert max(n for _, n in r.desired_timeline) >= 4
    first_up = next(t for t, n in r.desired_timeline if t >= 60.0 and n >= 2)
    assert first_up - 60.0 <= cfg.scrape_interval_s + 2.0
    assert all(x <= cfg.scrape_interval_s + 2.0 for x in reaction_times(r, trace, 10.0))
    hpa = simulate(trace, SERVICE, cfg, HpaPolicy(7.0))
    assert r.violations < hpa.violations


def test_hpa_formula_tolerance_and_rate_limit() -> None:
    hpa = HpaPolicy(target_rps_per_replica=10.0)

    def obs(rps: float) -> Observation:
        return Observation(0.0, (RatePoint(0.0, rps),), (), None, None, 0, 1)

    assert hpa.desired(obs(25.0), 0.0, 2) == 3  # ceil(2 * 25/20)
    assert HpaPolicy(10.0).desired(obs(20.5), 0.0, 2) == 2  # within 10% tolerance
    assert HpaPolicy(10.0).desired(obs(500.0), 0.0, 2) == 6  # max(2x, +4) per period
    down = HpaPolicy(10.0)
    assert down.desired(obs(60.0), 0.0, 6) == 6
    assert down.desired(obs(5.0), 15.0, 6) == 6  # 300 s scale-down window
    assert down.desired(obs(5.0), 320.0, 6) == 1


def test_oracle_scales_ahead_by_startup_delay() -> None:
    trace = step_trace()
    need = need_per_second(trace, 10.0, 1, 0.5, 0.99, 20)
    oracle = OraclePolicy(need, startup_delay_s=5.0)
    cfg = SimConfig(latency_slo_s=1.0, startup_delay_s=5.0)
    r = simulate(trace, SERVICE, cfg, oracle)
    first_up = next(
        t for (t, n), (_, p) in zip(r.desired_timeline[1:], r.desired_timeline, strict=False) if n > p
    )
    assert first_up < 60.0
    assert r.attainment > 0.99


def test_ideal_reactive_policy_sees_only_the_past() -> None:
    need = [1, 1, 5, 1, 1, 1, 1, 3, 1]
    policy = ReactiveIdealPolicy(need, memory_s=3.0)
    seen = [policy.desired(Observation(t, (), (), None, None, 0, 1), t, 1) for t in range(10)]
    # The need of second 2 counts once second 2 is over (t=3) and is held for 3 s.
    assert seen == [1, 1, 1, 5, 5, 5, 1, 1, 3, 3]
    spare = ReactiveIdealPolicy(need, memory_s=3.0, spare=1)
    assert spare.name == "ideal-reactive@3s+1"
    assert [spare.desired(Observation(t, (), (), None, None, 0, 1), t, 1) for t in range(10)] == [
        n + 1 for n in seen
    ]
    trace = step_trace()
    full = need_per_second(trace, 10.0, 1, 0.5, 0.99, 20)
    cfg = SimConfig(latency_slo_s=1.0, startup_delay_s=5.0)
    late = simulate(trace, SERVICE, cfg, ReactiveIdealPolicy(full, memory_s=300.0))
    early = simulate(trace, SERVICE, cfg, OraclePolicy(full, startup_delay_s=5.0))
    assert late.violations > early.violations  # the step is only seen after it started


def test_burst_foresight_is_blind_to_onsets_and_sees_inside_bursts() -> None:
    need = [1, 1, 2, 6, 3, 1, 1, 4, 1]
    policy = BurstForesightPolicy(need, startup_delay_s=2.0)
    seen = [policy.desired(Observation(t, (), (), None, None, 0, 1), t, 1) for t in range(10)]
    # t=2: second 1 was idle, the burst starting at second 2 is not seen; t=3: second 2 was above
    # the floor, so the burst's peak (6) is known; it ends at second 5. The lone 4 at second 7 is
    # seen only at t=8.
    assert seen == [1, 1, 1, 6, 6, 3, 1, 1, 4, 1]


def test_load_trace_reads_azure_format_and_rejects_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "t.csv"
    good.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:04.0319600,3180,8\n2023-11-16 18:17:03.9799600,4808,10\n"
    )
    trace = load_trace(good)
    assert [(round(r.arrival_s, 3), r.context_tokens) for r in trace] == [(0.0, 4808), (0.052, 3180)]
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:17:04,1\n")
    with pytest.raises(ValueError, match="missing columns \\['GeneratedTokens'\\]"):
        load_trace(bad)
    broken = tmp_path / "broken.csv"
    broken.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n")
    with pytest.raises(ValueError, match="line 2"):
        load_trace(broken)


class _Staleness:
    """Records how old the newest scrape is at each decision."""

    name = "staleness"
    interval_s = 2.0

    def __init__(self) -> None:
        self.ages: list[float] = []

    def desired(self, obs: Observation, now: float, current: int) -> int:
        self.ages.append(now - obs.t)
        return 1


@pytest.mark.parametrize(("phase", "age"), [(0.0, 2.0), (0.5, 0.5), (1.0, 1.0), (1.5, 1.5)])
def test_decision_phase_sets_how_old_the_newest_scrape_is(phase: float, age: float) -> None:
    # At phase 0 a decision on a scrape's instant comes first and sees the previous scrape.
    cfg = SimConfig(latency_slo_s=1.0, scrape_interval_s=2.0, decision_phase_s=phase)
    policy = _Staleness()
    simulate(step_trace(), SERVICE, cfg, policy)
    assert len(policy.ages) > 10
    assert all(a == pytest.approx(age) for a in policy.ages)


class _Series:
    name = "series"
    interval_s = 15.0

    def __init__(self) -> None:
        self.series: list[tuple[RatePoint, ...]] = []

    def desired(self, obs: Observation, now: float, current: int) -> int:
        self.series.append(obs.arrival_series)
        return 1


@pytest.mark.parametrize(("step", "spacing"), [(None, 2.0), (15.0, 15.0)])
def test_series_points_are_spaced_by_the_series_step(step: float | None, spacing: float) -> None:
    """As the operator's reader: one point per quarter of the rate window, at multiples of the step
    (Prometheus aligns a subquery's steps), each from the scrapes up to it; without a step, one
    point per scrape, at the scrape."""
    cfg = SimConfig(
        latency_slo_s=1.0, scrape_interval_s=2.0, rate_window_s=60.0, series_points=8, series_step_s=step
    )
    policy = _Series()
    simulate(step_trace(end=300.0), SERVICE, cfg, policy)
    full = [s for s in policy.series if len(s) == 8]
    assert len(full) > 5
    for series in full:
        gaps = {round(b.t - a.t, 6) for a, b in itertools.pairwise(series)}
        assert gaps == {spacing}
        if step is not None:
            assert all(p.t % step == 0 for p in series)
    # the high rate (30 req/s from 60 s on) fills 60 s windows: a rate is per window, not per step
    during = next(s for s in full if 200.0 <= s[-1].t <= 290.0)
    assert during[-1].rps == pytest.approx(30.0, rel=0.05)


class _Flap:
    """Two replicas during [30 s, 40 s) and [70 s, 80 s), one otherwise: two removals."""

    name = "flap"
    interval_s = 1.0

    def desired(self, obs: Observation, now: float, current: int) -> int:
        return 2 if 30 <= now < 40 or 70 <= now < 80 else 1


def test_a_removed_replica_holds_its_gpu_for_the_shutdown_delay() -> None:
    """Each removal costs the shutdown delay on top of the replica's time; the replicas still
    running when the trace ends pay none."""
    trace = step_trace(low=2.0, high=2.0)
    plain = simulate(trace, SERVICE, SimConfig(latency_slo_s=1.0), _Flap())
    slow = simulate(trace, SERVICE, SimConfig(latency_slo_s=1.0, shutdown_delay_s=2.5), _Flap())
    assert plain.scale_actions == slow.scale_actions == 4
    assert slow.gpu_seconds - plain.gpu_seconds == pytest.approx(2 * 2.5)
