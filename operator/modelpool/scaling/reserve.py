"""The burst reserve: spare replicas learned by replaying recent windows with more replicas (pure).

A reactive scaler sees a burst only after it starts, and new replicas serve ``lookahead_s`` later
(scrape + decision + start-up). What arrives in that gap is served by the replicas already
running and by those that come up during it. So after every decision the scaler replays the
window of one gap that just closed, as a fluid FIFO queue that starts empty: the arrivals of the
rate series against the replicas that served it decision by decision (the ready ones, without
any reserve; what already waited at the window's start was counted by earlier windows). For
``extra = 0, 1, 2, ...`` replicas on top it counts the requests that would have waited longer
than ``queue_budget``: the latency target less one service time, or the target queue time when
no latency target is set.

Those counts are kept per ``extra`` in a time-decayed history (half of the weight is gone after
``memory_s * ln 2``). The reserve is the fewest ``extra`` whose late requests stay within a share
of all requests seen; the scaler adds it to the replicas it wishes. A load the replicas follow
never has late requests and keeps no reserve; a load whose bursts start faster than replicas
come up keeps what their onsets needed. Because the replay credits the replicas that actually
came up during each window, a scaler that reacts quickly learns a smaller reserve than one that
reacts slowly, and how old the scraped data is matters little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelpool.scaling.types import BurstHistory, RatePoint, WindowStart

RESERVE_SHARE = 0.25
"""Share of the error budget (``1 - sloAttainment``) the burst reserve may leave to onsets. The
fluid replay is optimistic (requests come one at a time and service times vary, so real queues
run longer); the rest of the budget is for that, for bursts larger than any seen yet, and for
the queueing the steady sizing allows."""
_NEGLIGIBLE = 1e-6
MAX_EXTRA = 32  # never more spare replicas than this, whatever maxReplicas allows
_MAX_STEPS = 400  # replay resolution: at most this many steps per window
_MIN_STEP_S = 0.1


def rate_segments(series: Sequence[RatePoint], t0: float, t1: float) -> list[tuple[float, float, float]]:
    """``(start, end, rps)`` of the series' steps that end in ``(t0, t1]``, cut at ``t0`` (each
    point covers the time since the previous one): the arrivals the replay feeds its queue."""
    out: list[tuple[float, float, float]] = []
    previous_t: float | None = None
    for point in series:
        if previous_t is not None and t0 < point.t <= t1:
            out.append((max(previous_t, t0), point.t, point.rps))
        previous_t = point.t
    return out


def late_requests(
    arrivals: Sequence[tuple[float, float, float]],
    serving: Sequence[tuple[float, int]],
    t0: float,
    t1: float,
    capacity_rps: float,
    queue_budget_s: float,
    limit: int,
) -> list[float]:
    """Requests of the window ``(t0, t1]`` that wait longer than ``queue_budget_s``, with 0, 1, ...
    extra replicas, until none would (at most ``limit`` extra).

    A fluid FIFO queue, empty at ``t0``: ``arrivals`` are ``(start, end, rps)`` steps, ``serving``
    is ``(from, replicas)`` in time order (the first at ``t0``), the last count holding after
    ``t1``. With ``A`` the cumulative arrivals and ``C`` the cumulative capacity, what has
    left by ``t`` is ``min(A(t), C(t) + min over u <= t of (A(u) - C(u)))``; the work that arrived
    at ``y`` and has not left by ``y + queue_budget_s`` is late.
    """
    span = max(t1 - t0, 0.0)
    step = max(_MIN_STEP_S, (span + queue_budget_s) / _MAX_STEPS)
    n = math.ceil(span / step)
    budget_steps = max(1, round(queue_budget_s / step))
    total = n + budget_steps
    came = [0.0] * total
    for a, b, rps in arrivals:
        for k in range(max(0, int((a - t0) / step)), min(n, math.ceil((b - t0) / step))):
            overlap = min(t0 + (k + 1) * step, b) - max(t0 + k * step, a)
            if overlap > 0:
                came[k] += rps * overlap
    replicas = []
    index = 0
    for k in range(total):
        while index + 1 < len(serving) and serving[index + 1][0] <= t0 + k * step:
            index += 1
        replicas.append(serving[index][1] if serving else 0)
    late_by_extra: list[float] = []
    for extra in range(limit + 1):
        arrived, capacity, departed, lowest = [0.0], [0.0], [0.0], 0.0
        for k in range(total):
            arrived.append(arrived[-1] + came[k])
            capacity.append(capacity[-1] + (replicas[k] + extra) * capacity_rps * step)
            lowest = min(lowest, arrived[-1] - capacity[-1])
            departed.append(min(arrived[-1], capacity[-1] + lowest))
        late = 0.0
        for k in range(n):
            if came[k] > 0:
                late += came[k] * _late_fraction(
                    arrived[k] - departed[min(total, k + budget_steps)],
                    arrived[k + 1] - departed[min(total, k + 1 + budget_steps)],
                )
        late_by_extra.append(late)
        if late <= _NEGLIGIBLE:
            break
    return late_by_extra


def _late_fraction(first: float, last: float) -> float:
    """Share of one step's arrivals still queued one budget after they came, from that backlog at the
    step's first and last arrival (linear in between)."""
    if first <= 0 and last <= 0:
        return 0.0
    if first > 0 and last > 0:
        return 1.0
    return max(first, last) / abs(last - first)


def _decayed(history: BurstHistory, now: float, memory_s: float) -> tuple[float, dict[int, float]]:
    factor = 1.0
    if history.updated_at is not None and memory_s > 0:
        factor = math.exp(-max(0.0, now - history.updated_at) / memory_s)
    late = {extra: n * factor for extra, n in history.late if n * factor > _NEGLIGIBLE}
    return history.arrivals * factor, late


def record_window(
    history: BurstHistory,
    now: float,
    series: Sequence[RatePoint],
    pending: float,
    serving: int,
    capacity_rps: float,
    gap_s: float,
    queue_budget_s: float,
    memory_s: float,
    limit: int,
    series_counts_arrivals: bool = True,
) -> BurstHistory:
    """Replay the window that began ``gap_s`` (or a little more) ago, and open one at ``now``.

    ``serving`` is the replicas serving now without any reserve; each decision's count is kept
    with its window start, so the replay sees them come and go. When ``series`` is a served rate
    (Triton's alone, which stops growing when the replicas saturate), what still waits now
    (``pending``) is counted as having arrived evenly over the window.

    The replay starts from an empty queue: what already waited at the window's start arrived in
    earlier windows, whose replays counted it, and draining a backlog is the surge's job. (Replayed
    against the new arrivals, it made the reserve hold up to 10x the oracle's GPU-hours after the
    overloads of a 30 s start-up, for little attainment.) The reserve is for onsets.
    """
    arrivals, late = _decayed(history, now, memory_s)
    due = [s for s in history.starts if s.t <= now - gap_s]
    open_starts = [s for s in history.starts if s.t > now - gap_s]
    if due:
        start = due[-1]  # the newest start at least one gap ago; its pending and replicas
        t0 = now - gap_s
        steps = rate_segments(series, t0, now)
        if not series_counts_arrivals and steps and pending > 0:
            steps = [(a, b, rps + pending / gap_s) for a, b, rps in steps]
        arrivals += (start.pending if series_counts_arrivals else 0.0) + sum(
            (b - a) * rps for a, b, rps in steps
        )
        trajectory = [(t0, start.serving), *((s.t, s.serving) for s in open_starts), (now, serving)]
        replayed = late_requests(steps, trajectory, t0, now, capacity_rps, queue_budget_s, limit)
        for extra, n in enumerate(replayed):
            if n > _NEGLIGIBLE:
                late[extra] = late.get(extra, 0.0) + n
    return BurstHistory(
        updated_at=now,
        arrivals=arrivals,
        late=tuple(sorted(late.items())),
        starts=(*open_starts, WindowStart(now, pending, serving)),
    )


def reserve_replicas(history: BurstHistory, allowed_share: float, limit: int) -> int:
    """Fewest extra replicas (at most ``limit``) with which the replayed windows would have left at
    most ``allowed_share`` of the recent requests late."""
    if history.arrivals <= 0 or not history.late:
        return 0
    allowed = allowed_share * history.arrivals
    late = dict(history.late)
    return next((extra for extra in range(limit + 1) if late.get(extra, 0.0) <= allowed), limit)
