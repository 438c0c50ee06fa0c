"""Share a GPU budget between variants (of one or several pools) by value served per GPU.

Every variant first gets its floor (``minReplicas``, or what a hold keeps). The GPUs left are handed
out one replica at a time to the replica that adds the most value per GPU, where value is
``priority x (extra req/s served within the queue-time target)`` and the price is
``gpusPerReplica x cost``. Replicas that only add headroom (demand is already served) come last.
Ties are broken by (pool, variant) name, so the same input always gives the same allocation.
The budget is never exceeded for a hold: when the floors do not fit because held replicas raise
them above the minimums (a budget lowered, or a pool joining a shared GPU pool, while its metrics
are out), only the minimums are kept for sure and the held replicas compete by value like any
other, the lowest value per GPU cut first. When even the minimums exceed the budget every variant
keeps its minimum and the report says by how many GPUs the budget is short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

HEADROOM_VALUE = 1e-6


@dataclass(frozen=True)
class Claim:
    """One variant's request for GPUs."""

    key: tuple[str, str]
    floor: int
    wish: int
    gpus_per_replica: int
    priority: float
    cost: float
    demand_rps: float
    servable_rps: Callable[[int], float]
    minimum: int | None = None
    """The least the budget may grant: the spec's minimum (within ``serving_floors``) where a hold
    raised ``floor`` above it; ``None`` = ``floor``."""

    @property
    def least(self) -> int:
        """The replicas granted whatever the budget (:attr:`minimum`, at most :attr:`floor`)."""
        return max(0, self.floor if self.minimum is None else min(self.minimum, self.floor))


@dataclass(frozen=True)
class SharedBudget:
    """What the pools decided elsewhere (other reconcile passes) on the same GPU pool bring.

    ``other_claims`` are their latest claims, so the budget goes by value across all of them;
    ``held_gpus`` are the GPUs they hold now, which these pools never take: a pool grows into what
    another gave back only after that pool has shrunk, so the GPU pool is never over-committed.
    """

    other_claims: tuple[Claim, ...] = ()
    held_gpus: int = 0
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """Replicas granted to one claim and, when fewer than wished, why."""

    replicas: int
    cut_reason: str
    shortfall_rps: float


@dataclass(frozen=True)
class Allocation:
    """The grants of one GPU pool and a one-line report."""

    grants: dict[tuple[str, str], Grant]
    report: str


def _marginal_density(claim: Claim, replicas: int) -> float:
    """Value per GPU-cost of adding the ``replicas``-th replica."""
    served_now = min(claim.demand_rps, claim.servable_rps(replicas - 1))
    served_next = min(claim.demand_rps, claim.servable_rps(replicas))
    gained = max(0.0, served_next - served_now)
    value = claim.priority * (gained if gained > 0 else HEADROOM_VALUE)
    price = max(claim.gpus_per_replica, 1e-9) * claim.cost
    return value / price


def _shortfall(claim: Claim, replicas: int) -> float:
    return max(0.0, claim.demand_rps - claim.servable_rps(replicas))


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


def allocate(claims: Sequence[Claim], budget: int | None, gpu_pool: str = "default") -> Allocation:
    """Grant replicas to ``claims`` within ``budget`` GPUs (``None`` = unlimited).

    Floors that fit are granted first. Held replicas that do not fit are cut: then only each
    claim's :attr:`Claim.least` is granted first, and the held replicas compete with the wishes by
    value per GPU. Only minimums above the budget are granted beyond it."""
    ordered = sorted(claims, key=lambda c: c.key)
    if budget is None:
        unlimited = {c.key: Grant(c.wish, "", _shortfall(c, c.wish)) for c in ordered}
        return Allocation(unlimited, f"GPU pool {gpu_pool!r}: no budget set")
    floor_gpus = sum(c.floor * c.gpus_per_replica for c in ordered)
    if floor_gpus <= budget:
        return _by_value(ordered, budget, gpu_pool)
    least_gpus = sum(c.least * c.gpus_per_replica for c in ordered)
    held_note = (
        f"; held replicas ({floor_gpus} GPUs with the minimums) cut to them"
        if least_gpus < floor_gpus
        else ""
    )
    if least_gpus > budget:
        short = {
            c.key: Grant(
                c.least,
                (
                    f"budget short: minimums need {least_gpus} GPUs > budget {budget} in GPU pool "
                    f"{gpu_pool!r}; raise the budget or lower minReplicas"
                )
                if max(c.wish, c.floor) > c.least
                else "",
                _shortfall(c, c.least),
            )
            for c in ordered
        }
        report = (
            f"GPU pool {gpu_pool!r}: minimums need {least_gpus} GPUs but the budget is {budget} "
            f"({least_gpus - budget} short); every variant held at its minimum{held_note}"
        )
        return Allocation(short, report)
    held = {c.key: c.floor for c in ordered if c.floor > c.least}
    relaxed = [replace(c, floor=c.least, wish=max(c.wish, c.floor), minimum=None) for c in ordered]
    return _by_value(relaxed, budget, gpu_pool, held, floor_gpus)


def _by_value(
    ordered: Sequence[Claim],
    budget: int,
    gpu_pool: str,
    held: Mapping[tuple[str, str], int] | None = None,
    held_gpus: int = 0,
) -> Allocation:
    """Floors first, then one replica at a time by value per GPU, within ``budget`` (the floors
    fit). ``held``: the replicas holds asked for above the floors (``held_gpus`` GPUs with the
    floors), which the budget could not take; their cuts say so."""
    held = held or {}
    granted = {c.key: max(c.floor, 0) for c in ordered}
    left = budget - sum(c.floor * c.gpus_per_replica for c in ordered)
    blocked: set[tuple[str, str]] = set()
    winners: dict[tuple[str, str], float] = {}
    while True:
        candidates = [c for c in ordered if c.key not in blocked and granted[c.key] < max(c.wish, c.floor)]
        if not candidates:
            break
        best = max(
            candidates,
            key=lambda c: (_marginal_density(c, granted[c.key] + 1), c.priority, -c.cost, _neg(c.key)),
        )
        if best.gpus_per_replica > left:
            blocked.add(best.key)
            continue
        winners[best.key] = _marginal_density(best, granted[best.key] + 1)
        granted[best.key] += 1
        left -= best.gpus_per_replica
    grants: dict[tuple[str, str], Grant] = {}
    cut_names: list[str] = []
    for c in ordered:
        n = granted[c.key]
        reason = ""
        if n < c.wish:
            cut_names.append(f"{_name(c.key)} -{c.wish - n}")
            this = f"priority {c.priority:g}, cost {c.cost:g}, {c.gpus_per_replica} GPU/replica"
            if c.key in held:
                reason = (
                    f"budget: {n} of {c.wish} held replicas kept; held replicas need {held_gpus} GPUs "
                    f"> budget {budget} in GPU pool {gpu_pool!r}, so they are cut to it, never below "
                    f"minReplicas, the lowest value per GPU first (this variant: {this})"
                )
            else:
                reason = (
                    f"budget: {n} of {c.wish} wished replicas granted; GPU pool {gpu_pool!r} "
                    f"({budget} GPUs) went to higher value per GPU (this variant: {this})"
                )
        grants[c.key] = Grant(n, reason, _shortfall(c, n))
    used = budget - left
    report = f"GPU pool {gpu_pool!r}: {used}/{budget} GPUs allocated"
    if held:
        report += f" (held replicas need {held_gpus} GPUs: cut to the budget, never below minReplicas)"
    if cut_names:
        report += "; cut " + ", ".join(cut_names)
    return Allocation(grants, report)


def allocate_shared(
    claims: Sequence[Claim], budget: int | None, gpu_pool: str, shared: SharedBudget
) -> Allocation:
    """Grant ``claims`` their part of a budget they share with pools decided elsewhere.

    The budget is allocated over these claims and ``shared.other_claims`` together (by value per
    GPU, as :func:`allocate`); then these claims get at most that share, within the GPUs the other
    pools do not hold now (``budget - shared.held_gpus``, floors always kept).
    """
    joint = allocate([*claims, *shared.other_claims], budget, gpu_pool)
    if budget is None:
        return Allocation({c.key: joint.grants[c.key] for c in claims}, joint.report)
    free = max(0, budget - shared.held_gpus)
    capped = [_within(c, joint.grants[c.key].replicas) for c in claims]
    own = allocate(capped, free, gpu_pool)
    others = _some(shared.members)
    grants: dict[tuple[str, str], Grant] = {}
    for c in claims:
        share, now = joint.grants[c.key], own.grants[c.key]
        reason = share.cut_reason
        if now.replicas < share.replicas:
            reason = (
                f"budget: {now.replicas} of {c.wish} wished replicas granted now, {share.replicas} once "
                f"the pools sharing GPU pool {gpu_pool!r} ({others}) release GPUs: they hold "
                f"{shared.held_gpus} of {budget}"
            )
        grants[c.key] = Grant(now.replicas, reason, _shortfall(c, now.replicas))
    report = f"{joint.report}; shared with {others}, holding {shared.held_gpus} GPUs"
    return Allocation(grants, report)


def _within(claim: Claim, share: int) -> Claim:
    """``claim`` asking at most ``share`` replicas: its wish, and a held floor the joint allocation
    cut (the share is never below :attr:`Claim.least`)."""
    floor = max(claim.least, min(claim.floor, share))
    return replace(claim, wish=min(claim.wish, share), floor=floor)


NAMED_MEMBERS = 3
"""How many of the other pools on a shared GPU pool a reason or report names: the rest are counted
(a reason lists them on every cut variant, and a variant's reason holds at most 1024 characters)."""


def _some(names: Sequence[str], most: int = NAMED_MEMBERS) -> str:
    """``a, b, c and 14 more``: the first ``most`` names and how many others there are."""
    if not names:
        return "no other pool"
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _neg(key: tuple[str, str]) -> tuple[int, ...]:
    """Sort key making lexicographically *smaller* names win ties under ``max``."""
    return (*(-ord(ch) for ch in "/".join(key)), 1)
