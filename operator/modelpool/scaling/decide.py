"""The one public entry point: :func:`decide` turns metric samples into replica counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from modelpool.scaling.budget import Allocation, Claim, allocate, allocate_shared
from modelpool.scaling.types import (
    PoolDecision,
    PoolInput,
    ScalingDecision,
    ScalingInput,
    VariantDecision,
    VariantInput,
    VariantState,
)
from modelpool.scaling.variant import VariantWish, hold_reason, hold_wish, wish_for


def _wish(vi: VariantInput, now: float) -> VariantWish:
    """The variant's wish (a hold when its metrics are unusable, :func:`wish_for`). Metrics that
    pass every check and still overflow the arithmetic hold too: a pass never fails on its input."""
    try:
        return wish_for(vi, now)
    except ArithmeticError as exc:
        return hold_wish(vi, f"metrics absurd: sizing failed on them ({exc})", now)


LAST_TIER_SERVING = "kept at 1 as the last tier serving"
"""The note of a replica count that :func:`serving_floors` raised."""


def serving_floors(floors: Sequence[int]) -> tuple[int, ...]:
    """The variants' floors (routing order: the last is the final fallback tier), with the last
    one raised to 1 when every floor is zero: some tier must always serve, whatever the budget says.

    The one rule for every path that sets replicas: :func:`decide` (on each decision's floors) and
    the operator's passes without a decision (on the spec's ``minReplicas``)."""
    if floors and all(f <= 0 for f in floors):
        return (*floors[:-1], 1)
    return tuple(floors)


def _with_floor(wish: VariantWish, floor: int, minimum: int) -> VariantWish:
    """``wish`` with its floor raised to ``floor`` (noted in the reason where it raises the wish),
    and ``minimum`` (at most ``floor``) the least a budget may cut it to."""
    least = min(minimum, floor)
    if floor <= wish.floor:
        return replace(wish, minimum=least)
    if wish.wish >= floor:
        return replace(wish, floor=floor, minimum=least)
    if wish.held:  # the reason states the replicas kept, not the ones held before the raise
        problem = f"{wish.problem}; {LAST_TIER_SERVING}"
        return replace(
            wish, floor=floor, wish=floor, minimum=least, problem=problem, reason=hold_reason(floor, problem)
        )
    reason = f"{wish.reason}; {LAST_TIER_SERVING}"
    return replace(wish, floor=floor, wish=floor, minimum=least, reason=reason)


def _pool_wishes(pool: PoolInput, now: float) -> list[VariantWish]:
    """Wishes of a pool's variants, within :func:`serving_floors`: on their floors, and on the
    minimums a budget may cut held replicas to (so a cut never leaves the pool without a tier)."""
    for vi in pool.variants:
        vi.settings.validate()
    names = [vi.settings.name for vi in pool.variants]
    if len(set(names)) != len(names):
        raise ValueError(f"pool {pool.name!r}: variant names must be unique, got {names}")
    wishes = [_wish(vi, now) for vi in pool.variants]
    floors = serving_floors([w.floor for w in wishes])
    leasts = _serving_leasts(wishes, floors)
    return [_with_floor(w, f, m) for w, f, m in zip(wishes, floors, leasts, strict=True)]


def _serving_leasts(wishes: Sequence[VariantWish], floors: Sequence[int]) -> list[int]:
    """What a budget may cut each variant to: its floor, or where a hold raised the floor, the
    spec's minimum under it. When that leaves every variant at zero, the last one with a floor
    (one that serves now, or the final tier that ``serving_floors`` raised) keeps one replica:
    a cut never leaves the pool without a tier, nor swaps the tier that serves for another."""
    leasts = [f if w.minimum is None else min(w.minimum, f) for w, f in zip(wishes, floors, strict=True)]
    if all(n <= 0 for n in leasts):
        serving = [i for i, f in enumerate(floors) if f > 0]
        if serving:
            leasts[serving[-1]] = 1
    return leasts


def _claim(pool: PoolInput, wish: VariantWish) -> Claim:
    s = wish.settings
    return Claim(
        key=(pool.name, s.name),
        floor=wish.floor,
        wish=wish.wish,
        gpus_per_replica=s.gpus_per_replica,
        priority=s.priority,
        cost=s.cost,
        demand_rps=wish.demand_rps,
        servable_rps=wish.servable_rps,
        minimum=wish.least,
    )


def _decision(pool: PoolInput, wish: VariantWish, allocation: Allocation, now: float) -> VariantDecision:
    grant = allocation.grants[(pool.name, wish.settings.name)]
    desired = grant.replicas
    verb = "scale up" if desired > wish.current else "scale down" if desired < wish.current else "keep"
    reason = f"{verb} {wish.current}->{desired}: {wish.reason}" if not wish.held else wish.reason
    if wish.held and desired != wish.wish:  # the budget cut the held replicas: say what is kept
        reason = hold_reason(desired, wish.problem)
    if grant.cut_reason:
        reason += f"; {grant.cut_reason}"
    state = VariantState(
        replicas=desired,
        decided_at=now,
        recommendations=wish.history,
        last_demand_rps=wish.demand_rps,
        bursts=wish.bursts,
        capacity_rps=wish.measured_capacity_rps,
        demand_at=wish.demand_at,
    )
    return VariantDecision(
        name=wish.settings.name,
        desired_replicas=desired,
        current_replicas=wish.current,
        wished_replicas=wish.wish,
        demand_rps=wish.demand_rps,
        capacity_per_replica_rps=wish.capacity_rps,
        reason=reason,
        held=wish.held,
        cut_replicas=max(0, wish.wish - desired),
        cut_reason=grant.cut_reason,
        shortfall_rps=grant.shortfall_rps,
        state=state,
    )


def decide(inp: ScalingInput, now: float) -> ScalingDecision:
    """Decide desired replicas for every variant of every pool at time ``now``.

    Pure: no I/O, no clock. Per variant: metric health check (missing/stale/absurd metrics hold the
    last decision, never scaling down) -> demand (rate + rising trend x look-ahead + backlog + load
    routing is moving here) -> fewest replicas meeting the queue-time target (M/M/c) -> tolerance ->
    stabilisation windows -> min/max and scale-to-zero. Then each GPU pool's budget is shared by
    value per GPU (:mod:`modelpool.scaling.budget`), together with the claims of pools on it
    decided elsewhere (``ScalingInput.shared``), never taking the GPUs those hold now. Store each
    ``VariantDecision.state`` and pass it back as ``VariantInput.previous`` next time.
    """
    pool_names = [p.name for p in inp.pools]
    if len(set(pool_names)) != len(pool_names):
        raise ValueError(f"pool names must be unique, got {pool_names}")
    wishes = {p.name: _pool_wishes(p, now) for p in inp.pools}
    claims_by_gpu_pool: dict[str, list[Claim]] = defaultdict(list)
    for pool in inp.pools:
        claims_by_gpu_pool[pool.gpu_pool].extend(_claim(pool, w) for w in wishes[pool.name])
    allocations = {
        gpu_pool: (
            allocate_shared(claims, inp.gpu_budgets.get(gpu_pool), gpu_pool, inp.shared[gpu_pool])
            if gpu_pool in inp.shared
            else allocate(claims, inp.gpu_budgets.get(gpu_pool), gpu_pool)
        )
        for gpu_pool, claims in sorted(claims_by_gpu_pool.items())
    }
    pools: dict[str, PoolDecision] = {}
    for pool in inp.pools:
        allocation = allocations[pool.gpu_pool]
        variants = tuple(_decision(pool, w, allocation, now) for w in wishes[pool.name])
        held = [v for v in variants if v.held]
        pools[pool.name] = PoolDecision(
            name=pool.name,
            variants=variants,
            metrics_held=bool(held),
            held_reason="; ".join(f"{v.name}: {v.reason}" for v in held),
            budget_message=allocation.report,
        )
    return ScalingDecision(
        pools=pools,
        budget_reports={k: a.report for k, a in allocations.items()},
        claims={k: tuple(v) for k, v in claims_by_gpu_pool.items()},
    )
