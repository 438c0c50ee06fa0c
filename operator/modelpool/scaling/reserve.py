"""The burst reserve: spare replicas learned from how far recent bursts outran the replicas (pure).

A reactive scaler sees a burst only after it starts, and new replicas serve ``lookahead_s`` later
(scrape + decision + start-up). What arrives in that gap must be served by the replicas already
running. So after every decision the scaler looks back one gap: at the window's start ``t0`` it had
``serving`` replicas (without any reserve) and ``pending`` requests waiting; in ``(t0, now]``
``arrivals`` came. Those replicas serve ``capacity * (gap + queue_budget)`` requests each before
the last of them waits too long, so the window was short by

    short = (arrivals + pending) / (capacity * (gap + queue_budget)) - serving   replicas.

``queue_budget`` is how long a request may wait and still meet the variant's latency target (the
target less one service time), or the target queue time when no latency target is set: a burst's
requests fail the SLO only when they finish late, not when they queue longer than the scaler's
steady-state target.

Windows are kept as a time-decayed histogram (half of the weight is gone after ``memory_s * ln 2``).
The reserve is the fewest extra replicas ``r`` for which the requests those windows could not have
served, ``sum(max(0, short - r) * capacity * (gap + queue_budget))``, stay within a share of all
requests seen; the scaler adds it to the replicas it wishes. A smooth trace never falls short and
gets no reserve; a trace whose bursts start faster than a replica starts keeps as many spare
replicas as its recent bursts needed at their onset, not at their peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelpool.scaling.types import BurstHistory, RatePoint, WindowStart

_BIN = 0.25  # shortfalls are kept in quarter-replica bins
RESERVE_SHARE = 0.25
"""Share of the error budget (``1 - sloAttainment``) the burst reserve may leave to onsets; the
rest is for bursts larger than any seen yet and for the queueing the steady sizing allows."""
_NEGLIGIBLE = 1e-6


def arrivals_between(series: Sequence[RatePoint], t0: float, t1: float) -> float:
    """Requests that arrived in ``(t0, t1]`` by the rate series (each point covers the time since
    the previous one)."""
    total = 0.0
    previous_t: float | None = None
    for point in series:
        if previous_t is not None and point.t > t0 and point.t <= t1:
            total += point.rps * (point.t - max(previous_t, t0))
        previous_t = point.t
    return total


def _decayed(history: BurstHistory, now: float, memory_s: float) -> tuple[float, dict[float, float]]:
    factor = 1.0
    if history.updated_at is not None and memory_s > 0:
        factor = math.exp(-max(0.0, now - history.updated_at) / memory_s)
    bins = {short: w * factor for short, w in history.shortfalls if w * factor > _NEGLIGIBLE}
    return history.arrivals * factor, bins


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
    series_counts_arrivals: bool = True,
) -> BurstHistory:
    """Close the window that began ``gap_s`` (or a little more) ago, and open one at ``now``.

    The work the window's replicas had to serve is what arrived plus what already waited at its
    start, when ``series`` counts arrivals (the router's counter). A served-rate series (Triton's
    alone) stops growing when the replicas saturate: then it is what was served plus what still
    waits now (``pending``).
    """
    arrivals, bins = _decayed(history, now, memory_s)
    due = [s for s in history.starts if s.t <= now - gap_s]
    open_starts = [s for s in history.starts if s.t > now - gap_s]
    if due:
        start = due[-1]  # the newest start at least one gap ago; its pending and replicas
        came = arrivals_between(series, now - gap_s, now)
        per_replica = capacity_rps * (gap_s + queue_budget_s)
        work = came + (start.pending if series_counts_arrivals else pending)
        arrivals += work
        short = work / per_replica - start.serving
        if short > 0:
            key = math.ceil(short / _BIN) * _BIN
            bins[key] = bins.get(key, 0.0) + per_replica
    return BurstHistory(
        updated_at=now,
        arrivals=arrivals,
        shortfalls=tuple(sorted(bins.items())),
        starts=(*open_starts, WindowStart(now, pending, serving)),
    )


def reserve_replicas(history: BurstHistory, allowed_share: float, limit: int) -> int:
    """Fewest extra replicas (at most ``limit``) that would have left at most ``allowed_share`` of
    the recent requests unserved in time at the onset of their burst."""
    if history.arrivals <= 0 or not history.shortfalls:
        return 0
    allowed = allowed_share * history.arrivals
    for extra in range(limit + 1):
        unserved = sum(max(0.0, short - extra) * w for short, w in history.shortfalls)
        if unserved <= allowed:
            return extra
    return limit
