"""The burst reserve (modelpool.scaling.reserve) and the burstiness-aware sizing, alone and in decide()."""

from __future__ import annotations

import math

import pytest

from modelpool.scaling import RatePoint, VariantDecision, VariantMetrics
from modelpool.scaling.demand import dispersion_index
from modelpool.scaling.reserve import late_requests, rate_segments, record_window, reserve_replicas
from modelpool.scaling.types import BurstHistory, WindowStart
from modelpool.scaling.variant import queue_budget
from unit.scaling.helpers import NOW, one, only, settings, steady


def series(t_end: float, rates: list[float], step: float = 2.0) -> tuple[RatePoint, ...]:
    return tuple(RatePoint(t_end - step * (len(rates) - 1 - i), r) for i, r in enumerate(rates))


def test_rate_segments_cut_whole_and_partial_steps() -> None:
    s = series(10.0, [1.0, 2.0, 4.0, 8.0, 16.0])  # points at 2, 4, 6, 8, 10
    assert rate_segments(s, 4.0, 10.0) == [(4.0, 6.0, 4.0), (6.0, 8.0, 8.0), (8.0, 10.0, 16.0)]
    # (5, 10]: half of the step ending at 6, then the two whole steps.
    assert rate_segments(s, 5.0, 10.0) == [(5.0, 6.0, 4.0), (6.0, 8.0, 8.0), (8.0, 10.0, 16.0)]
    assert rate_segments(s, 10.0, 20.0) == []


BURST = [(0.0, 5.0, 40.0)]  # 40 req/s for 5 s


def test_replay_counts_who_waits_too_long_per_extra_replica() -> None:
    # One replica of 10 req/s under 40 req/s: the queue grows 30/s, so a request arriving at x waits
    # 3x and is late after x = 1/3 s: 40 * (5 - 1/3) = 186.7. One more replica: waits x, late after
    # 1 s (160); two more: x/3, late after 3 s (80); three more keep up.
    late = late_requests(BURST, [(0.0, 1)], 0.0, 5.0, 10.0, 1.0, 10)
    assert late == pytest.approx([560 / 3, 160.0, 80.0, 0.0])


def test_replay_credits_the_replicas_that_came_up_during_the_window() -> None:
    # Six replicas from t = 2: the 60 waiting then drain at 20/s; an arrival at x > 0.5 leaves at
    # 2 + (40x - 20)/60, i.e. waits 5/3 - x/3, so only those in (1/3, 2) are late: 66.7.
    late = late_requests(BURST, [(0.0, 1), (2.0, 6)], 0.0, 5.0, 10.0, 1.0, 10)
    assert late[0] == pytest.approx(200 / 3)
    # 30 already waiting at the window's start: earlier windows counted them and the surge drains
    # them, so the replay starts empty; they count among the window's requests.
    backlog = BurstHistory(updated_at=0.0, starts=(WindowStart(0.0, 30.0, 1), WindowStart(2.0, 0.0, 6)))
    replayed = record_window(
        backlog, 5.0, series(5.0, [40] * 4, step=5 / 3), 0.0, 6, 10.0, 5.0, 1.0, 3600, 10
    )
    assert (replayed.arrivals, replayed.late[0][1]) == pytest.approx((230.0, 200 / 3))


def test_window_replayed_with_the_decisions_serving_counts() -> None:
    start = BurstHistory(
        updated_at=0.0,
        starts=(WindowStart(t=0.0, pending=0.0, serving=1), WindowStart(t=2.0, pending=60.0, serving=6)),
    )
    h = record_window(start, 5.0, series(5.0, [40, 40, 40, 40], step=5 / 3), 0.0, 6, 10.0, 5.0, 1.0, 3600, 10)
    assert h.arrivals == pytest.approx(200)
    assert h.late[0][0] == 0 and h.late[0][1] == pytest.approx(200 / 3)
    assert [extra for extra, _ in h.late] == list(range(len(h.late)))
    assert h.starts == (WindowStart(2.0, 60.0, 6), WindowStart(5.0, 0.0, 6))


def test_served_rate_window_counts_what_still_waits() -> None:
    # Triton's served rate saturates at the replica's 10 req/s: the burst shows in what waits at the
    # window's end (150), counted as arrived evenly: 40 req/s in all, as in the first test.
    start = BurstHistory(updated_at=0.0, starts=(WindowStart(t=0.0, pending=0.0, serving=1),))
    saturated = series(5.0, [10, 10, 10, 10], step=5 / 3)
    h = record_window(start, 5.0, saturated, 150.0, 1, 10.0, 5.0, 1.0, 3600, 10, series_counts_arrivals=False)
    assert h.arrivals == pytest.approx(50 + 150)
    assert h.late[0][1] == pytest.approx(560 / 3)
    as_arrivals = record_window(start, 5.0, saturated, 150.0, 1, 10.0, 5.0, 1.0, 3600, 10)
    assert as_arrivals.late == ()  # the same numbers read as arrivals: 50 came, one replica coped


def test_window_the_replicas_could_serve_records_nothing_late() -> None:
    start = BurstHistory(updated_at=0.0, starts=(WindowStart(t=0.0, pending=0.0, serving=2),))
    h = record_window(start, 6.0, series(6.0, [10, 10, 10, 10]), 0.0, 2, 10.0, 5.0, 1.0, 3600, 10)
    assert h.arrivals == pytest.approx(50)  # the last gap (5 s) of arrivals
    assert h.late == ()


def test_windows_not_yet_closed_stay_open() -> None:
    start = BurstHistory(updated_at=0.0, starts=(WindowStart(t=0.0, pending=0.0, serving=1),))
    h = record_window(start, 2.0, series(2.0, [50, 50]), 0.0, 1, 10.0, 5.0, 1.0, 3600, 10)
    assert h.arrivals == 0.0 and h.late == ()
    assert [s.t for s in h.starts] == [0.0, 2.0]


def test_history_decays_with_the_memory() -> None:
    h = BurstHistory(updated_at=0.0, arrivals=1000.0, late=((0, 60.0),))
    later = record_window(h, 3600.0, (), 0.0, 1, 10.0, 5.0, 1.0, 3600.0, 10)
    assert later.arrivals == pytest.approx(1000 / math.e)
    assert later.late[0][1] == pytest.approx(60 / math.e)


def test_reserve_is_fewest_replicas_within_the_allowed_share() -> None:
    h = BurstHistory(arrivals=10_000.0, late=((0, 240.0), (1, 120.0), (2, 60.0)))
    assert reserve_replicas(h, 0.0, 10) == 3
    assert reserve_replicas(h, 0.006, 10) == 2
    assert reserve_replicas(h, 0.012, 10) == 1
    assert reserve_replicas(h, 0.024, 10) == 0
    assert reserve_replicas(h, 0.0, 2) == 2  # capped
    assert reserve_replicas(BurstHistory(), 0.0, 10) == 0


def test_dispersion_index_poisson_like_clumped_and_trend() -> None:
    assert dispersion_index(series(20.0, [5.0] * 8)) == 1.0
    assert dispersion_index(series(20.0, [0.0, 20.0] * 4)) > 5.0
    assert dispersion_index(series(20.0, [float(r) for r in range(2, 18, 2)])) == 1.0  # a ramp is no clump
    assert dispersion_index(series(20.0, [3.0, 9.0])) == 1.0  # too few points


def burst_then_idle(idle_rps: float = 0.5, **kw: object) -> tuple[int, VariantDecision]:
    """Idle at one replica, then a burst the one replica cannot serve, then idle again; returns the
    replicas wished when the burst showed, and the decision long after it."""
    state = None
    current = 1
    wished_at_burst = 0
    decision: VariantDecision | None = None
    for step in range(40):
        t = NOW + 2.0 * step
        rate = 40.0 if 5 <= step < 8 else idle_rps
        pending = 60.0 if step == 7 else 0.0
        metrics = VariantMetrics(
            rate_series=series(t, [rate] * 4), newest_sample_t=t, pending_requests=pending
        )
        inp = one(
            metrics, current=current, previous=state, scale_down_stabilization_s=6.0, lookahead_s=5.0, **kw
        )
        decision = only(inp, t)
        if step == 5:
            wished_at_burst = decision.desired_replicas
        state, current = decision.state, decision.desired_replicas
    assert decision is not None
    return wished_at_burst, decision


def test_a_burst_that_outran_the_replicas_leaves_a_reserve() -> None:
    at_burst, after = burst_then_idle()
    assert at_burst >= 4
    assert after.desired_replicas > 1
    assert "burst reserve: keeping" in after.reason
    assert after.state is not None and after.state.bursts.late


def test_a_latency_target_leaves_the_burst_more_time_and_a_smaller_reserve() -> None:
    # Without a latency target a burst's requests are late once they queue past the 0.5 s target
    # queue time; with a 5 s target they may wait 4.9 s (5 s less one 0.1 s service time), so the
    # same burst outran the replica by fewer replicas.
    _, strict = burst_then_idle()
    _, lenient = burst_then_idle(latency_target_s=5.0)
    assert 1 <= lenient.desired_replicas < strict.desired_replicas
    assert strict.state is not None and lenient.state is not None
    assert lenient.state.bursts.late[0][1] < strict.state.bursts.late[0][1]


def test_queue_budget_is_the_latency_target_less_one_service_time() -> None:
    assert queue_budget(settings(target_queue_time_s=0.5), 10.0) == 0.5
    assert queue_budget(settings(target_queue_time_s=0.5, latency_target_s=2.0), 10.0) == pytest.approx(1.9)
    # Two instances per replica at 10 req/s: each request takes 0.2 s.
    two = settings(target_queue_time_s=0.5, latency_target_s=2.0, instances_per_replica=2)
    assert queue_budget(two, 10.0) == pytest.approx(1.8)
    # Never less than the target queue time.
    assert queue_budget(settings(target_queue_time_s=0.5, latency_target_s=0.3), 10.0) == 0.5


def test_no_reserve_when_switched_off_or_patient() -> None:
    assert burst_then_idle(burst_reserve=False)[1].desired_replicas == 1
    assert burst_then_idle(scale_up_stabilization_s=4.0)[1].desired_replicas == 1


def test_no_reserve_for_a_tier_scaled_to_zero_while_idle() -> None:
    kept = burst_then_idle(idle_rps=0.0, min_replicas=0)[1]
    assert kept.desired_replicas > 1  # the same history without scale-to-zero keeps a reserve
    idle = burst_then_idle(idle_rps=0.0, min_replicas=0, scale_to_zero=True)[1]
    assert idle.desired_replicas == 1  # 0 wished; 1 because it is the pool's last tier
    assert "burst reserve" not in idle.reason
    # While traffic flows a scale-to-zero tier is not idle, and its reserve applies.
    flowing = burst_then_idle(idle_rps=0.5, min_replicas=0, scale_to_zero=True)[1]
    assert flowing.desired_replicas > 1
    assert "burst reserve: keeping" in flowing.reason


def test_a_smooth_load_the_replicas_serve_gets_no_reserve() -> None:
    state = None
    current = 2
    for step in range(60):
        t = NOW + 2.0 * step
        d = only(one(steady(10.0, now=t, step=2.0), current=current, previous=state, lookahead_s=5.0), t)
        state, current = d.state, d.desired_replicas
        assert "burst reserve" not in d.reason
    assert state is not None and state.bursts.arrivals > 0 and state.bursts.late == ()


def test_held_metrics_keep_what_the_reserve_learned() -> None:
    learned = burst_then_idle()[1]
    assert learned.state is not None and learned.state.bursts.late
    t = NOW + 100
    stale = VariantMetrics(rate_series=series(t, [1.0] * 4), newest_sample_t=t - 100)
    later = only(one(stale, current=learned.desired_replicas, previous=learned.state), t)
    assert later.held
    assert later.desired_replicas == learned.desired_replicas
    assert later.state is not None and later.state.bursts == learned.state.bursts
