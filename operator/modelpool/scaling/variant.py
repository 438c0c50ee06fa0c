"""The replicas one variant wishes for, before the GPU budget is applied (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from modelpool.scaling.demand import (
    Demand,
    capacity_per_replica,
    capacity_problem,
    estimate_demand,
    metrics_problem,
    observed_metrics,
    partial_scrape,
    stale_after_s,
)
from modelpool.scaling.queueing import max_rate_for_replicas, replicas_for_target
from modelpool.scaling.reserve import MAX_EXTRA, RESERVE_SHARE, record_window, reserve_replicas
from modelpool.scaling.stabilization import History, stabilize
from modelpool.scaling.types import BurstHistory, VariantInput, VariantSettings


@dataclass(frozen=True)
class VariantWish:
    """Replicas wished by one variant, the floor it may never go below, and why.

    ``measured_capacity_rps`` is the capacity of one replica to remember for when no replica serves
    (the latest measured from the compute time, else the one remembered before).

    A hold (``held``) keeps ``floor`` replicas for ``problem``; ``minimum`` is the spec's floor
    under it, which a GPU budget too small for the held replicas may cut them to (``None``:
    ``floor``). ``demand_at`` is when ``demand_rps`` was measured (a hold keeps the last one)."""

    settings: VariantSettings
    current: int
    floor: int
    wish: int
    demand_rps: float
    capacity_rps: float | None
    reason: str
    held: bool
    history: History
    bursts: BurstHistory = field(default_factory=BurstHistory)
    measured_capacity_rps: float | None = None
    minimum: int | None = None
    problem: str = ""
    demand_at: float | None = None

    @property
    def least(self) -> int:
        """The replicas no budget cuts: ``minimum``, at most ``floor``."""
        return self.floor if self.minimum is None else min(self.minimum, self.floor)

    def servable_rps(self, replicas: int) -> float:
        """Arrival rate ``replicas`` replicas serve within the variant's queue-time target.

        Without a capacity, none; but a hold without one (never measured) tells nothing of what
        its replicas serve, so it claims no shortfall: unbounded, which the budget, taking the
        least of it and the demand, still ranks as headroom."""
        if self.capacity_rps is None:
            return math.inf if self.held else 0.0
        s = self.settings
        return max_rate_for_replicas(
            replicas, self.capacity_rps, s.instances_per_replica, s.target_queue_time_s, s.slo_attainment
        )


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def hold_reason(replicas: int, problem: str) -> str:
    """The reason of a hold that keeps ``replicas``."""
    return f"holding {replicas} replicas: {problem}"


def held_demand(vi: VariantInput, now: float | None) -> tuple[float, float | None]:
    """``(demand, measured at)`` a hold keeps: the last demand measured, until it is older than
    the variant's staleness limit (:func:`stale_after_s`) at ``now``; then 0, since an outage
    tells nothing of the demand. An old demand would go on sizing the variant's shortfall, which
    routing moves onto the next tier (``expected_overflow``), for the whole outage. A demand of
    unknown age (a state restored from the status) counts as measured at the last decision."""
    previous = vi.previous
    if previous is None:
        return 0.0, None
    at = previous.demand_at if previous.demand_at is not None else previous.decided_at
    if now is not None and now - at > stale_after_s(vi.metrics, vi.settings):
        return 0.0, at
    return previous.last_demand_rps, at


def hold_wish(vi: VariantInput, problem: str, now: float | None = None) -> VariantWish:
    """Keep the last decision (never below the current count) because metrics are unusable, with
    the demand :func:`held_demand` keeps at ``now``. The spec's ``minReplicas`` stays the floor a
    GPU budget too small for the held replicas may cut them to; a scale-to-zero variant at zero
    (decided so, and none running) stays at zero, as the decision left it.

    The capacity offered to the budget (and so the shortfall the demand leaves) is the decision's:
    the setting or the profile, else the one last measured from the compute time
    (:func:`_remembered_capacity`). Without it the held replicas served nothing as far as the
    budget knows, and the variant's whole demand was reported short and moved onto the next
    tier, although those replicas served it a moment ago."""
    s = vi.settings
    last = vi.previous.replicas if vi.previous is not None else vi.current_replicas
    kept = max(last, vi.current_replicas)
    held = _clamp(kept, 0 if s.scale_to_zero and kept == 0 else s.min_replicas, s.max_replicas)
    previous = vi.previous
    capacity = s.capacity_per_replica_rps
    if capacity_problem(capacity, vi.metrics, s) is not None:
        capacity = None  # an absurd setting is the reason to hold: the budget must not use it either
    if capacity is None:
        capacity = _remembered_capacity(vi)
    demand, demand_at = held_demand(vi, now)
    return VariantWish(
        settings=s,
        current=vi.current_replicas,
        floor=held,
        wish=held,
        demand_rps=demand,
        capacity_rps=capacity,
        reason=hold_reason(held, problem),
        held=True,
        history=previous.recommendations if previous is not None else (),
        bursts=previous.bursts if previous is not None else BurstHistory(),
        measured_capacity_rps=previous.capacity_rps if previous is not None else None,
        minimum=s.min_replicas,
        problem=problem,
        demand_at=demand_at,
    )


def _size(rate: float, capacity: float, s: VariantSettings, target_queue_s: float) -> int:
    return replicas_for_target(
        rate, capacity, s.instances_per_replica, target_queue_s, s.slo_attainment, s.max_replicas
    )


def _sizing_target(s: VariantSettings, demand: Demand) -> float:
    """The queue-time target the replicas are sized for. Clumped arrivals queue longer than Poisson
    ones at the same rate: by the Allen-Cunneen approximation the M/M/c wait grows by
    ``(dispersion + 1) / 2``, so the target is shrunk by that factor."""
    return s.target_queue_time_s * 2.0 / (demand.burstiness + 1.0)


def _ready(vi: VariantInput) -> int:
    """The Deployment's ready replicas (the current count when readiness is unknown)."""
    return vi.current_replicas if vi.ready_replicas is None else vi.ready_replicas


def _serving(vi: VariantInput) -> int:
    """Replicas serving now and staying: the ready ones, at most the current count."""
    return min(_ready(vi), vi.current_replicas)


def backlog_wait_s(vi: VariantInput, demand: Demand, capacity: float) -> float | None:
    """How long the newest waiting request waits on the replicas that serve now, when they drain the
    backlog within the target queue time while the forecast demand (rate + rising trend over the
    look-ahead) stays within what they serve within the target; else ``None``.

    A replica ordered now serves only after its start-up, so for such a backlog it would come up
    after the queue is gone: it buys nothing and is paid for until the scale-down window lets it go
    (and then for the pod's termination). The ready replicas count, not those still starting.
    """
    s = vi.settings
    waiting = vi.metrics.pending_requests or 0.0
    ready = _serving(vi)
    if waiting <= 0 or ready <= 0:
        return None
    forecast = demand.steady_rps + demand.trend_rps_per_s * s.lookahead_s
    servable = max_rate_for_replicas(
        ready, capacity, s.instances_per_replica, _sizing_target(s, demand), s.slo_attainment
    )
    wait = waiting / (ready * capacity)  # FIFO: the newest waits for all ahead of it to be served
    return wait if forecast <= servable and wait <= s.target_queue_time_s else None


def _planned_demand(vi: VariantInput, demand: Demand, capacity: float) -> tuple[Demand, str]:
    """The demand to size for: without the backlog when the serving replicas drain it in time."""
    if demand.backlog_rps <= 0:
        return demand, ""
    wait = backlog_wait_s(vi, demand, capacity)
    if wait is None:
        return demand, ""
    note = (
        f"; the backlog of {vi.metrics.pending_requests or 0.0:.0f} drains in {wait:.2f}s "
        f"(<= target {vi.settings.target_queue_time_s:g}s) on the {_serving(vi)} ready: none added for it"
    )
    return demand.without_backlog(), note


def _remembered_capacity(vi: VariantInput) -> float | None:
    """The capacity of one replica measured before, when it is still a usable number."""
    remembered = vi.previous.capacity_rps if vi.previous is not None else None
    if remembered is None or not 0 < remembered <= vi.settings.max_plausible_rps:
        return None  # unknown, or not a capacity (NaN fails both comparisons)
    return remembered


def _measured_capacity(vi: VariantInput, capacity: float | None) -> float | None:
    """What to remember as the measured capacity: ``capacity`` when it comes from the compute time
    (not from the setting or a profile), else what was remembered before."""
    if capacity is not None and vi.settings.capacity_per_replica_rps is None:
        return capacity
    return _remembered_capacity(vi)


def _sizing_capacity(vi: VariantInput, capacity: float | None) -> tuple[float | None, str]:
    """The capacity to size with, and a note when it is not today's: ``capacity`` (set, or measured
    now), else, while no replica serves to measure it, the one last measured."""
    if capacity is not None or _serving(vi) > 0:
        return capacity, ""
    remembered = _remembered_capacity(vi)
    if remembered is None:
        return None, ""
    return remembered, f"; capacity {remembered:.1f} req/s per replica as last measured (none serves now)"


def _unmeasured(vi: VariantInput, demand: Demand) -> tuple[int, str]:
    """Replicas for a demand no replica can measure the capacity for yet: none serves (at zero
    replicas, or every replica still starting), so there is no compute time. Start
    ``max(1, minReplicas)`` from zero, or keep the replicas that are starting, until one serves
    and measures it."""
    s = vi.settings
    current = vi.current_replicas
    start = _clamp(max(current, 1), s.min_replicas, s.max_replicas)
    rate = f"demand {demand.total_rps:.3g} req/s, capacity not yet measured"
    if current == 0:
        return start, f"starting {start} replica{'' if start == 1 else 's'} from zero: {rate}"
    return start, f"keeping {start} until a replica is ready to measure it: {rate}"


def _recommend(vi: VariantInput, demand: Demand, capacity: float) -> tuple[int, int, str]:
    """(steady, surge, reason): replicas for what was seen, and for seen + trend + backlog."""
    s = vi.settings
    burstiness = demand.burstiness
    target = _sizing_target(s, demand)
    steady = _size(demand.steady_rps, capacity, s, target)
    surge = _size(demand.total_rps, capacity, s, target)
    why = (
        f"{demand.describe()} needs {surge} x {capacity:.1f} req/s for "
        f"{s.slo_attainment:.0%} queued <= {s.target_queue_time_s:g}s"
    )
    if burstiness > 1.0:
        why += f" (arrivals {burstiness:.1f}x burstier than Poisson)"
    current = vi.current_replicas
    queue = vi.metrics.queue_time_s
    lagging_only = vi.metrics.pending_requests is None  # queue time lags; pending is the live signal
    if (
        lagging_only
        and queue is not None
        and current > 0
        and queue > s.target_queue_time_s
        and surge <= current
    ):
        surge = current + 1
        why += f"; queue time {queue:.2f}s > target, adding one"
    elif current > 0 and steady != current and surge <= max(steady, current):
        servable = max_rate_for_replicas(current, capacity, s.instances_per_replica, target, s.slo_attainment)
        if servable > 0 and abs(demand.steady_rps - servable) <= s.tolerance * servable:
            steady = surge = current
            why += f"; within tolerance {s.tolerance:.0%} of current capacity"
    if _no_queue_forms(vi, demand, capacity, max(steady, surge)):
        steady, surge = min(steady, current), current
        why += (
            f"; keeping {current}: no queue forms ({queue or 0.0:.3f}s queued, "
            f"{vi.metrics.pending_requests or 0.0:.0f} waiting) "
            f"and {demand.total_rps:.1f} req/s is within their {current * capacity:.1f} req/s"
        )
    return steady, surge, why


def _no_queue_forms(vi: VariantInput, demand: Demand, capacity: float, wanted: int) -> bool:
    """True when a scale-up would only buy the queueing model's margin, which the live queue shows
    is not needed: the current replicas serve the demand at full load, requests queue for under a
    tenth of the target on average, and no more wait than there are serving slots. The margin is for queues
    that form; Erlang C assumes exponential service times and asks for it at moderate load even
    where the real queue stays empty. A demand above the replicas' capacity still scales up at once.
    """
    s = vi.settings
    current = vi.current_replicas
    queue = vi.metrics.queue_time_s
    pending = vi.metrics.pending_requests
    return (
        current > 0
        and wanted > current
        and demand.total_rps <= current * capacity
        and queue is not None
        and queue <= s.target_queue_time_s / 10
        and pending is not None
        and pending <= current * s.instances_per_replica
    )


def wish_for(vi: VariantInput, now: float) -> VariantWish:
    """Replicas the variant needs now: demand -> queueing model -> stabilisation -> min/max.

    The replicas for the *seen* demand go through the stabilisation windows; the extra replicas for
    the rising trend and the backlog (the surge) are added at once on top but are not remembered, so
    a forecast or a drained queue never pins replicas for the whole scale-down window.
    """
    s = vi.settings
    problem = metrics_problem(vi.metrics, s, now)
    if problem is not None:
        return hold_wish(vi, problem, now)
    capacity = capacity_per_replica(vi.metrics, s)
    problem = capacity_problem(capacity, vi.metrics, s)
    if problem is not None:
        return hold_wish(vi, problem, now)
    measured = _measured_capacity(vi, capacity)
    partial = partial_scrape(vi.metrics, s, now)
    vi = replace(vi, metrics=observed_metrics(vi.metrics, s, now))
    demand = estimate_demand(vi.metrics, s, vi.expected_extra_rps)
    idle = demand.total_rps <= 0  # a backlog keeps a tier from scaling to zero
    capacity, remembered = _sizing_capacity(vi, capacity)
    if capacity is None:
        if demand.total_rps > 0 and _serving(vi) > 0:
            return hold_wish(vi, "capacity unknown: set capacityPerReplicaRps or expose compute time", now)
        steady, why = _unmeasured(vi, demand) if demand.total_rps > 0 else (0, "no demand")
        surge = steady
    else:
        demand, drained = _planned_demand(vi, demand, capacity)
        steady, surge, why = _recommend(vi, demand, capacity)
        why += drained + remembered
    floor = 0 if (s.scale_to_zero and idle) else s.min_replicas
    recommendation = _clamp(steady, floor, s.max_replicas)
    history = vi.previous.recommendations if vi.previous is not None else ()
    stabilized, history = stabilize(
        vi.current_replicas,
        recommendation,
        history,
        now,
        s.scale_up_stabilization_s,
        s.scale_down_stabilization_s,
    )
    if s.scale_up_stabilization_s > 0:
        surge = 0  # a scale-up window asks for patience: no surge on top
    wish = _clamp(max(stabilized, surge), floor, s.max_replicas)
    waiting = vi.metrics.pending_requests or 0.0
    keep = min(vi.current_replicas, s.max_replicas)
    if wish < keep and waiting > vi.current_replicas * s.instances_per_replica:
        wish = keep
        why += f"; no scale-down while {waiting:.0f} requests wait"
    if wish < keep and partial is not None:
        wish = keep
        why += f"; no scale-down: {partial}"
    if wish < max(recommendation, surge):
        why += f"; scale-up stabilised at {wish}"
    elif wish > max(recommendation, surge) and wish == stabilized:
        why += f"; scale-down stabilised at {wish} (peak of last {s.scale_down_stabilization_s:g}s)"
    bursts = vi.previous.bursts if vi.previous is not None else BurstHistory()
    if s.burst_reserve and capacity is not None and s.scale_up_stabilization_s == 0:
        wish, bursts, note = _with_burst_reserve(vi, wish, floor, idle, capacity, bursts, now)
        why += note
    if max(steady, surge) >= s.max_replicas and demand.total_rps > 0:
        why += f"; capped at maxReplicas {s.max_replicas}"
    return VariantWish(
        settings=s,
        current=vi.current_replicas,
        floor=floor,
        wish=wish,
        demand_rps=demand.total_rps,
        capacity_rps=capacity,
        reason=why,
        held=False,
        history=history,
        bursts=bursts,
        measured_capacity_rps=measured,
        demand_at=now,
    )


def queue_budget(s: VariantSettings, capacity: float) -> float:
    """How long a request may wait at a burst's onset: until it would miss the latency target (the
    target less one service time, ``instances / capacity``), and never less than the target queue
    time; the target queue time alone without a latency target."""
    if s.latency_target_s is None:
        return s.target_queue_time_s
    return max(s.target_queue_time_s, s.latency_target_s - s.instances_per_replica / capacity)


def _with_burst_reserve(
    vi: VariantInput, wish: int, floor: int, idle: bool, capacity: float, bursts: BurstHistory, now: float
) -> tuple[int, BurstHistory, str]:
    """Replay the window that just closed, then add the reserve to the wish.

    The windows are replayed with the replicas serving without a reserve (ready, at most the wish),
    so the reserve goes on top of that wish (a burst may start from any load, not only from idle).

    No reserve for a scale-to-zero tier while idle: scale-to-zero asked for no idle cost. Nor with
    a scale-up window (checked by the caller): like the surge, the reserve is a fast scale-up, and
    the window asks for patience.
    """
    s = vi.settings
    ready = _ready(vi)
    limit = min(s.max_replicas, MAX_EXTRA)
    bursts = record_window(
        bursts,
        now,
        vi.metrics.rate_series,
        vi.metrics.pending_requests or 0.0,
        min(wish, ready),
        capacity,
        s.lookahead_s,
        queue_budget(s, capacity),
        s.burst_memory_s,
        limit,
        series_counts_arrivals=vi.metrics.router_rps is not None,
    )
    if s.scale_to_zero and idle:
        return wish, bursts, ""
    extra = reserve_replicas(bursts, RESERVE_SHARE * (1.0 - s.slo_attainment), limit)
    reserved = min(s.max_replicas, max(wish, floor) + extra)
    if extra == 0 or reserved <= wish:
        return wish, bursts, ""
    note = (
        f"; burst reserve: keeping {reserved} ({max(wish, floor)} + {extra}: recent bursts outran the "
        f"replicas within {s.lookahead_s:g}s)"
    )
    return reserved, bursts, note
