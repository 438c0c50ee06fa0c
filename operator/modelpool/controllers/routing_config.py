"""Pure translation of a RoutingPolicy (plus its pool) into the routers' RouterConfig.

Weights start from the policy and are then adjusted by what the pool can serve:
a variant the GPU budget keeps short of capacity hands the share it cannot serve
to the next tier that meets the policy's quality floor, and the large tier's
share is capped by ``objectives.maxLargeSharePercent`` (not below the floor: with
no other variant meeting it the share stays). Every adjustment is recorded with a
one-line reason for the policy's status. See docs/router.md, *Weights the operator
programs*.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelpool.api.modelpool import TIER_ORDER, ModelPoolSpec, ModelPoolStatus, Variant
from modelpool.api.routingpolicy import EffectiveTier, EffectiveWeight, RoutingPolicySpec
from modelpool.builders.triton import child_name
from modelpool.controllers.routing_capacity import VariantLoad, pool_demand, variant_loads
from modelpool.models.profile import CapabilityProfile
from modelpool.routing.config import (
    CascadeConfig,
    EndpointSliceSource,
    RouterConfig,
    ScorerConfig,
    TierRoute,
    VariantConfig,
)

# Variants without a profiled accuracy are assumed to meet any quality floor.
UNKNOWN_ACCURACY = 100.0
DEFAULT_TIMEOUT_MS = 5000
MAX_TIMEOUT_MS = 600_000
"""The longest upstream timeout a router takes (``VariantConfig.timeout_ms``)."""
SLO_TIMEOUT_FACTOR = 10


def upstream_timeout_ms(latency_slo_ms: int | None) -> int:
    """A variant's upstream timeout: ten latency SLOs, at most what a router takes."""
    if not latency_slo_ms:
        return DEFAULT_TIMEOUT_MS
    return min(latency_slo_ms * SLO_TIMEOUT_FACTOR, MAX_TIMEOUT_MS)


@dataclass(frozen=True)
class WeightPlan:
    weights: dict[str, int]
    reasons: dict[str, str]


def _tier_sorted(variants: list[Variant]) -> list[Variant]:
    return sorted(variants, key=lambda v: (TIER_ORDER[v.tier], v.name))


@dataclass(frozen=True)
class Overflow:
    """Weight a variant cannot serve: it keeps ``keep`` of its weight."""

    keep: int
    demand_rps: float
    """The demand it would get at its weight."""
    servable_rps: float
    """What it serves within target with the replicas the GPU budget gives it."""


def overflow(
    weight: int, total_weight: int, load: VariantLoad, total_demand: float | None
) -> Overflow | None:
    """The part of ``weight`` the variant cannot serve, None when it serves it all.

    With ``total_demand`` (weighted mode, every variant's demand known) the variant's demand is
    its weight's share of the pool's demand, which moving weight leaves unchanged, against what the
    budget can give it (its granted replicas plus unrequested GPUs): the moves do not undo
    themselves at the next scaler decision. Without it, the scaler's shortfall is taken as the
    demand its weight brings (no feedback where the routers do not split by weight)."""
    if load.servable_rps is None or load.reachable_rps is None:
        return None
    if total_demand is not None:
        demand, servable = total_demand * weight / total_weight, load.reachable_rps
    elif load.shortfall_rps > 0:
        demand, servable = load.servable_rps + load.shortfall_rps, load.servable_rps
    else:
        return None
    if demand <= servable:
        return None
    return Overflow(math.floor(weight * servable / demand + 1e-9), demand, servable)


def _meets(name: str, accuracy: Mapping[str, float], floor: float | None) -> bool:
    return floor is None or accuracy.get(name, UNKNOWN_ACCURACY) >= floor


def _receiver(
    donor: Variant, variants: list[Variant], accuracy: Mapping[str, float], floor: float | None
) -> Variant | None:
    """The next tier up that meets the floor, else the nearest one down."""
    ok = [v for v in _tier_sorted(variants) if v.name != donor.name and _meets(v.name, accuracy, floor)]
    above = [v for v in ok if TIER_ORDER[v.tier] > TIER_ORDER[donor.tier]]
    below = [v for v in ok if TIER_ORDER[v.tier] <= TIER_ORDER[donor.tier]]
    if above:
        return above[0]
    return below[-1] if below else None


def _move_overflow(
    weights: dict[str, int],
    reasons: dict[str, str],
    pool: ModelPoolSpec,
    loads: Mapping[str, VariantLoad],
    total_demand: float | None,
    receiver_of: Callable[[Variant], Variant | None],
) -> None:
    """Step 1: each variant, in tier order, hands the weight it cannot serve to its receiver."""
    total_weight = sum(weights.values())
    for variant in _tier_sorted(pool.variants):
        name, load = variant.name, loads.get(variant.name)
        if load is None or weights[name] == 0:
            continue
        if load.servable_rps is None:
            if load.shortfall_rps > 0:
                reasons[name] = (
                    f"kept: short {load.shortfall_rps:.0f} req/s under the GPU budget, but its capacity per "
                    "replica is unknown (no scaling.capacityPerReplicaRps, profile or measurement): "
                    "nothing moved"
                )
            continue
        over = overflow(weights[name], total_weight, load, total_demand)
        if over is None or over.keep >= weights[name]:
            continue
        target = receiver_of(variant)
        short = f"short {over.demand_rps - over.servable_rps:.0f} req/s under the GPU budget"
        if target is None:
            reasons[name] = f"kept: {short}, but no other variant meets the quality floor: nothing moved"
            continue
        moved = weights[name] - over.keep
        weights[name] = over.keep
        weights[target.name] += moved
        reasons[name] = (
            f"gave {moved} to {target.name}: {short} ({over.demand_rps:.0f} req/s at weight "
            f"{over.keep + moved}, {over.servable_rps:.0f} servable)"
        )
        reasons[target.name] = f"took {moved} from {name} (capacity shortfall)"


def largest_remainder(amount: int, shares: Mapping[str, int]) -> dict[str, int]:
    """``amount`` split in proportion to ``shares`` in whole units that sum to exactly ``amount``
    (at most ``sum(shares)``): each gets its quota rounded down, and the units left go to the
    largest remainders (then the larger share, then the name)."""
    whole = sum(shares.values())
    if whole <= 0:
        return {name: 0 for name in shares}
    parts = {name: amount * share // whole for name, share in shares.items()}
    left = amount - sum(parts.values())
    order = sorted(shares, key=lambda n: (-(amount * shares[n] % whole), -shares[n], n))
    for name in order[:left]:
        parts[name] += 1
    return parts


def _cap_large_share(
    weights: dict[str, int],
    reasons: dict[str, str],
    pool: ModelPoolSpec,
    cap: int,
    floor: float | None,
    accuracy: Mapping[str, float],
) -> None:
    """Step 2: the large tier's share at most ``cap`` percent, its excess to the highest non-large
    tier that meets the quality floor; with none that does, the share stays (the floor wins)."""
    total = sum(weights.values())
    large = [v.name for v in _tier_sorted(pool.variants) if v.tier == "large"]
    large_total = sum(weights[n] for n in large)
    allowed = total * cap // 100
    rest = [v for v in _tier_sorted(pool.variants) if v.tier != "large"]
    if total <= 0 or large_total <= allowed or not rest:
        return
    receiver = next((v for v in reversed(rest) if _meets(v.name, accuracy, floor)), None)
    if receiver is None:
        for name in large:
            if weights[name] > 0:
                reasons[name] = f"not capped at {cap}%: no other variant meets the {floor:g}% quality floor"
        return
    cuts = largest_remainder(large_total - allowed, {n: weights[n] for n in large})
    for name in large:
        if weights[name] > 0:
            weights[name] -= cuts[name]
            weights[receiver.name] += cuts[name]
            reasons[name] = f"capped: large tier share at most {cap}%"
    reasons[receiver.name] = f"took the large tier's excess over {cap}%"


def plan_weights(
    spec: RoutingPolicySpec,
    pool: ModelPoolSpec,
    status: ModelPoolStatus | None,
    accuracy: Mapping[str, float] | None = None,
    capacity: Mapping[str, float] | None = None,
) -> WeightPlan:
    """Effective weights (weighted mode; others get the same map for reporting).

    ``accuracy`` is each variant's profiled accuracy in percent, ``capacity`` its profile's
    capacity per replica (``ProfileView.capacity_rps``: what the scaler sizes with where
    ``scaling.capacityPerReplicaRps`` is unset)."""
    acc = dict(accuracy or {})
    objectives = spec.objectives
    floor = float(objectives.quality_floor_percent) if objectives.quality_floor_percent is not None else None
    weights = {v.name: 0 for v in pool.variants}
    for w in spec.weights:
        if w.variant in weights:
            weights[w.variant] = w.weight
    reasons = {name: "from spec.weights" for name in weights}

    # 1. Load the budget cannot serve: to the next tier up that meets the quality floor.
    loads = variant_loads(pool, status, capacity or {})
    total_demand = pool_demand(pool, status) if spec.mode == "weighted" else None
    _move_overflow(
        weights, reasons, pool, loads, total_demand, lambda v: _receiver(v, pool.variants, acc, floor)
    )
    # 2. Cap the large tier's share.
    if objectives.max_large_share_percent is not None:
        _cap_large_share(weights, reasons, pool, objectives.max_large_share_percent, floor, acc)
    return WeightPlan(weights, reasons)


def band_accuracy(profile: CapabilityProfile, low: float, high: float) -> float | None:
    """The profile's accuracy on items with complexity in (low, high], from its buckets (item-weighted)."""
    hits = [
        b
        for b in profile.accuracy_by_bucket
        if b.accuracy is not None and b.items > 0 and b.max_complexity > low and b.min_complexity < high
    ]
    items = sum(b.items for b in hits)
    return sum(b.items * (b.accuracy or 0.0) for b in hits) / items if items else None


def _same_scorer(profile: CapabilityProfile, kind: str) -> bool:
    return profile.complexity_scorer.split(":", 1)[0] == kind


def _band_accuracy_of(
    profiles: Mapping[str, CapabilityProfile], name: str, kind: str, low: float, high: float
) -> float | None:
    """A variant's profiled accuracy on a band; None without a comparable profile."""
    profile = profiles.get(name)
    if profile is None or not _same_scorer(profile, kind):
        return None
    return band_accuracy(profile, low, high)


def plan_tiers(
    spec: RoutingPolicySpec, pool: ModelPoolSpec, profiles: Mapping[str, CapabilityProfile]
) -> list[EffectiveTier]:
    """Tiered bands with each target checked against the quality floor on the band's buckets.

    A band whose target's profiled accuracy on that band is under ``qualityFloorPercent`` goes to
    the cheapest higher tier that meets it (or the highest tier when none does). Profiles whose
    buckets come from another scorer than the policy's are not comparable and change nothing.
    """
    if spec.tiered is None:
        return []
    floor = spec.objectives.quality_floor_percent
    kind = spec.tiered.scorer.kind
    by_name = {v.name: v for v in pool.variants}
    out, low = [], 0.0
    for band in spec.tiered.tiers:
        high = band.max_complexity_percent / 100
        target, reason = band.target, "from spec.tiered"
        accuracy = _band_accuracy_of(profiles, target, kind, low, high)
        if target in profiles and accuracy is None:
            reason = f"profile buckets come from scorer {profiles[target].complexity_scorer}, not {kind}"
        if floor is not None and target in by_name and accuracy is not None and accuracy * 100 < floor:
            above = [
                v.name
                for v in _tier_sorted(pool.variants)
                if TIER_ORDER[v.tier] > TIER_ORDER[by_name[target].tier]
            ]
            fits = [
                n
                for n in above
                if (a := _band_accuracy_of(profiles, n, kind, low, high)) is None or a * 100 >= floor
            ]
            chosen = fits[0] if fits else (above[-1] if above else target)
            if chosen != target:
                reason = (
                    f"{target} profiled {accuracy:.1%} on complexity ({low:.2f}, {high:.2f}], under the "
                    f"{floor}% floor: sent to {chosen}"
                )
                target = chosen
        out.append(
            EffectiveTier(max_complexity_percent=band.max_complexity_percent, target=target, reason=reason)
        )
        low = high
    return out


def build_router_config(
    namespace: str,
    pool_name: str,
    spec: RoutingPolicySpec,
    pool: ModelPoolSpec,
    weights: WeightPlan,
    generation: int,
    tiers: list[EffectiveTier] | None = None,
    *,
    policy_name: str | None = None,
) -> RouterConfig:
    """The RouterConfig every router of the policy runs (``policy_name`` labels their metrics)."""
    variants = [
        VariantConfig(
            name=v.name,
            tier=v.tier,
            triton_model=v.model.name,
            cost=float(v.cost),
            weight=weights.weights[v.name],
            endpoint_slice=EndpointSliceSource(
                service=child_name(pool_name, v.name), namespace=namespace, port="http"
            ),
            timeout_ms=upstream_timeout_ms(spec.objectives.latency_slo_ms),
        )
        for v in _tier_sorted(pool.variants)
    ]
    routes = []
    scorer = ScorerConfig()
    if spec.tiered is not None:
        bands = tiers if tiers is not None else plan_tiers(spec, pool, {})
        routes = [TierRoute(max_complexity=t.max_complexity_percent / 100, target=t.target) for t in bands]
        scorer = ScorerConfig(kind=spec.tiered.scorer.kind, path=spec.tiered.scorer.path)
    cascade = None
    if spec.cascade is not None:
        cascade = CascadeConfig(
            draft=spec.cascade.draft,
            verifier=spec.cascade.verifier,
            accept_threshold=spec.cascade.accept_threshold_percent / 100,
        )
    return RouterConfig(
        generation=generation,
        pool=pool_name,
        policy=policy_name,
        mode=spec.mode,
        model_name=spec.model_name or pool_name,
        variants=variants,
        tiers=routes,
        cascade=cascade,
        scorer=scorer,
    )


def config_digest(config: RouterConfig) -> str:
    """Digest of everything but the generation: a new generation only when content changes."""
    body = config.model_dump(mode="json", by_alias=True)
    body.pop("generation", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def effective_weights(plan: WeightPlan) -> list[EffectiveWeight]:
    return [
        EffectiveWeight(variant=n, weight=w, reason=plan.reasons[n]) for n, w in sorted(plan.weights.items())
    ]
