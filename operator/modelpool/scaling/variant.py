"""The replicas one variant wishes for, before the GPU budget is applied (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from modelpool.scaling.demand import Demand, capacity_per_replica, estimate_demand, metrics_problem
from modelpool.scaling.queueing import max_rate_for_replicas, replicas_for_target
from modelpool.scaling.stabilization import History, stabilize
from modelpool.scaling.types import VariantInput, VariantSettings


@dataclass(frozen=True)
class VariantWish:
    """Replicas wished by one variant, the floor it may never go below, and why."""

    settings: VariantSettings
    current: int
    floor: int
    wish: int
    demand_rps: float
    capacity_rps: float | None
    reason: str
    held: bool
    history: History

    def servable_rps(self, replicas: int) -> float:
        """Arrival rate ``replicas`` replicas serve within the variant's queue-time target."""
        if self.capacity_rps is None:
            return 0.0
        s = self.settings
        return max_rate_for_replicas(
            replicas, self.capacity_rps, s.instances_per_replica, s.target_queue_time_s, s.slo_attainment
        )


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def hold_wish(vi: VariantInput, problem: str) -> VariantWish:
    """Keep the last decision (never below the current count) because metrics are unusable."""
    s = vi.settings
    last = vi.previous.replicas if vi.previous is not None else vi.current_replicas
    held = _clamp(max(last, vi.current_replicas), s.min_replicas, s.max_replicas)
    history = vi.previous.recommendations if vi.previous is not None else ()
    return VariantWish(
        settings=s,
        current=vi.current_replicas,
        floor=held,
        wish=held,
        demand_rps=vi.previous.last_demand_rps if vi.previous is not None else 0.0,
        capacity_rps=s.capacity_per_replica_rps,
        reason=f"holding {held} replicas: {problem}",
        held=True,
        history=history,
    )


def _raw_recommendation(vi: VariantInput, demand: Demand, capacity: float) -> tuple[int, str]:
    s = vi.settings
    raw = replicas_for_target(
        demand.total_rps,
        capacity,
        s.instances_per_replica,
        s.target_queue_time_s,
        s.slo_attainment,
        s.max_replicas,
    )
    why = (
        f"{demand.describe()} needs {raw} x {capacity:.1f} req/s for "
        f"{s.slo_attainment:.0%} queued <= {s.target_queue_time_s:g}s"
    )
    queue = vi.metrics.queue_time_s
    if queue is not None and vi.current_replicas > 0 and queue > s.target_queue_time_s:
        if raw <= vi.current_replicas:
            raw = vi.current_replicas + 1
            why += f"; queue time {queue:.2f}s > target, adding one"
    elif vi.current_replicas > 0 and raw != vi.current_replicas:
        servable = max_rate_for_replicas(
            vi.current_replicas, capacity, s.instances_per_replica, s.target_queue_time_s, s.slo_attainment
        )
        if servable > 0 and abs(demand.total_rps - servable) <= s.tolerance * servable:
            raw = vi.current_replicas
            why += f"; within tolerance {s.tolerance:.0%} of current capacity"
    return raw, why


def wish_for(vi: VariantInput, now: float) -> VariantWish:
    """Replicas the variant needs now: demand -> queueing model -> stabilisation -> min/max."""
    s = vi.settings
    problem = metrics_problem(vi.metrics, s, now)
    if problem is not None:
        return hold_wish(vi, problem)
    demand = estimate_demand(vi.metrics, s, vi.expected_extra_rps)
    capacity = capacity_per_replica(vi.metrics, s)
    if capacity is None:
        if demand.total_rps > 0:
            return hold_wish(vi, "capacity unknown: set capacityPerReplicaRps or expose compute time")
        raw, why = 0, "no demand"
    else:
        raw, why = _raw_recommendation(vi, demand, capacity)
    idle = demand.total_rps <= 0
    floor = 0 if (s.scale_to_zero and idle) else s.min_replicas
    recommendation = _clamp(raw, floor, s.max_replicas)
    history = vi.previous.recommendations if vi.previous is not None else ()
    stabilized, history = stabilize(
        vi.current_replicas,
        recommendation,
        history,
        now,
        s.scale_up_stabilization_s,
        s.scale_down_stabilization_s,
    )
    wish = _clamp(stabilized, floor, s.max_replicas)
    if wish < recommendation:
        why += f"; scale-up stabilised at {wish}"
    elif wish > recommendation:
        why += f"; scale-down stabilised at {wish} (peak of last {s.scale_down_stabilization_s:g}s)"
    if raw >= s.max_replicas and recommendation == s.max_replicas and demand.total_rps > 0:
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
    )
