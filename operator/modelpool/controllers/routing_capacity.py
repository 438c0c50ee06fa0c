"""What each variant of a pool serves and is asked for, as its scaler sees it: the inputs of the
weight moves of :func:`modelpool.controllers.routing_config.plan_weights`.

The scaler's shortfall is its demand less what the granted replicas serve within the queue-time
target (``VariantWish.servable_rps``); the same capacity per replica and the same queueing model
are used here, so that a weight move and the shortfall it answers agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, Variant, VariantStatus
from modelpool.controllers.scaling_planner import settings_for
from modelpool.scaling.queueing import max_rate_for_replicas


@dataclass(frozen=True)
class VariantLoad:
    """One variant as the scaler's last decision left it in the pool's status.

    ``servable_rps`` is what its granted replicas serve within target; ``reachable_rps`` what they
    serve with the replicas the GPU budget's unrequested GPUs would add (both None where its
    capacity per replica is unknown)."""

    shortfall_rps: float
    servable_rps: float | None
    reachable_rps: float | None


def _usable(rate: float | None) -> float | None:
    """A rate that can size anything: positive and finite."""
    return rate if rate is not None and math.isfinite(rate) and rate > 0 else None


def capacity_per_replica(
    variant: Variant, observed: VariantStatus | None, profile_capacity: float | None
) -> float | None:
    """The capacity of one replica the scaler sizes with: ``scaling.capacityPerReplicaRps``, else
    the profile's, else the one it last measured from the compute time (its memory); None when
    none is known."""
    if variant.scaling.capacity_per_replica_rps:
        return float(variant.scaling.capacity_per_replica_rps)
    remembered = observed.scaler.capacity_per_replica_rps if observed and observed.scaler else None
    return _usable(profile_capacity) or _usable(remembered)


def servable_rps(variant: Variant, replicas: int, capacity: float) -> float:
    """Arrival rate ``replicas`` replicas serve within the variant's queue-time target."""
    s = settings_for(variant, capacity)
    return max_rate_for_replicas(
        replicas, capacity, s.instances_per_replica, s.target_queue_time_s, s.slo_attainment
    )


def spare_replicas(variant: Variant, pool: ModelPoolSpec, status: ModelPoolStatus) -> int:
    """Replicas of ``variant`` the pool's GPU budget leaves unrequested. On a shared GPU pool the
    other pools' part is not in this status: none counted."""
    if pool.gpu_pool.name:
        return 0
    free = status.gpu_budget - status.gpus_requested
    return max(0, free) // max(1, variant.gpus_per_replica)


def variant_loads(
    pool: ModelPoolSpec, status: ModelPoolStatus | None, profile_capacity: Mapping[str, float]
) -> dict[str, VariantLoad]:
    """Each variant with a status entry, by name."""
    if status is None:
        return {}
    live = {v.name: v for v in status.variants}
    loads = {}
    for variant in pool.variants:
        observed = live.get(variant.name)
        if observed is None:
            continue
        capacity = capacity_per_replica(variant, observed, profile_capacity.get(variant.name))
        granted = max(0, observed.desired_replicas)
        possible = max(granted, min(granted + spare_replicas(variant, pool, status), variant.max_replicas))
        loads[variant.name] = VariantLoad(
            shortfall_rps=float(max(0, observed.capacity_shortfall_rps)),
            servable_rps=servable_rps(variant, granted, capacity) if capacity else None,
            reachable_rps=servable_rps(variant, possible, capacity) if capacity else None,
        )
    return loads


def pool_demand(pool: ModelPoolSpec, status: ModelPoolStatus | None) -> float | None:
    """The demand on the whole pool: the sum of its variants' last demand (the scaler's memory).
    Weights move load between variants but not this sum. None unless every variant has one."""
    live = {v.name: v for v in (status.variants if status else [])}
    total = 0.0
    for variant in pool.variants:
        observed = live.get(variant.name)
        if observed is None or observed.scaler is None:
            return None
        demand = observed.scaler.last_demand_rps
        if not math.isfinite(demand):
            return None
        total += max(0.0, demand)
    return total
