"""Pure translation of a RoutingPolicy (plus its pool) into the routers' RouterConfig.

Weights start from the policy and are then adjusted by what the pool can serve:
a variant the GPU budget keeps short of capacity hands the share it cannot serve
to the next tier that meets the policy's quality floor, and the large tier's
share is capped by ``objectives.maxLargeSharePercent``. Every adjustment is
recorded with a one-line reason for the policy's status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from modelpool.api.modelpool import TIER_ORDER, ModelPoolSpec, ModelPoolStatus, Variant
from modelpool.api.routingpolicy import EffectiveTier, EffectiveWeight, RoutingPolicySpec
from modelpool.builders.triton import child_name
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


def _receiver(
    donor: Variant, variants: list[Variant], accuracy: Mapping[str, float], floor: float | None
) -> Variant | None:
    """The next tier up that meets the floor, else the nearest one down."""
    ordered = _tier_sorted(variants)
    ok = [
        v
        for v in ordered
        if v.name != donor.name and (floor is None or accuracy.get(v.name, UNKNOWN_ACCURACY) >= floor)
    ]
    above = [v for v in ok if TIER_ORDER[v.tier] > TIER_ORDER[donor.tier]]
    below = [v for v in ok if TIER_ORDER[v.tier] <= TIER_ORDER[donor.tier]]
    if above:
        return above[0]
    return below[-1] if below else None


def plan_weights(
    spec: RoutingPolicySpec,
    pool: ModelPoolSpec,
    status: ModelPoolStatus | None,
    accuracy: Mapping[str, float] | None = None,
) -> WeightPlan:
    """Effective weights (weighted mode; others get the same map for reporting)."""
    acc = dict(accuracy or {})
    floor = (
        float(spec.objectives.quality_floor_percent)
        if spec.objectives.quality_floor_percent is not None
        else None
    )
    weights = {v.name: 0 for v in pool.variants}
    for w in spec.weights:
        if w.variant in weights:
            weights[w.variant] = w.weight
    reasons = {name: "from spec.weights" for name in weights}
    by_name = {v.name: v for v in pool.variants}
    live = {v.name: v for v in (status.variants if status else [])}

    # 1. Capacity the budget cannot give: move the unservable share to the next tier up.
    for variant in _tier_sorted(pool.variants):
        observed = live.get(variant.name)
        if observed is None or observed.capacity_shortfall_rps <= 0 or weights[variant.name] == 0:
            continue
        capacity = variant.scaling.capacity_per_replica_rps
        served = observed.ready_replicas * capacity if capacity else 0
        fraction = (
            observed.capacity_shortfall_rps / (observed.capacity_shortfall_rps + served) if served else 0.5
        )
        moved = round(weights[variant.name] * fraction)
        target = _receiver(variant, pool.variants, acc, floor)
        if moved <= 0 or target is None:
            continue
        weights[variant.name] -= moved
        weights[target.name] += moved
        reasons[variant.name] = (
            f"gave {moved} to {target.name}: "
            f"short {observed.capacity_shortfall_rps} req/s under the GPU budget"
        )
        reasons[target.name] = f"took {moved} from {variant.name} (capacity shortfall)"

    # 2. Cap the large tier's share.
    cap = spec.objectives.max_large_share_percent
    total = sum(weights.values())
    if cap is not None and total > 0:
        large = [n for n, v in by_name.items() if v.tier == "large"]
        large_total = sum(weights[n] for n in large)
        allowed = total * cap // 100
        rest = [v for v in _tier_sorted(pool.variants) if v.tier != "large"]
        if large_total > allowed and rest:
            excess = large_total - allowed
            receiver = next(
                (v for v in reversed(rest) if floor is None or acc.get(v.name, UNKNOWN_ACCURACY) >= floor),
                rest[-1],
            )
            for name in large:
                cut = round(excess * weights[name] / large_total) if large_total else 0
                weights[name] -= cut
                weights[receiver.name] += cut
                reasons[name] = f"capped: large tier share at most {cap}%"
            reasons[receiver.name] = f"took the large tier's excess over {cap}%"
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
