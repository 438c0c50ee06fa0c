"""Builders for scaling unit tests (fake metric samples; the decision code itself is real)."""

from __future__ import annotations

from modelpool.scaling import (
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantDecision,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
    decide,
)

NOW = 1000.0


def steady(
    rps: float, now: float = NOW, points: int = 6, step: float = 5.0, **extra: float
) -> VariantMetrics:
    """A flat rate series ending at ``now``."""
    series = tuple(RatePoint(now - step * (points - 1 - i), rps) for i in range(points))
    return VariantMetrics(rate_series=series, newest_sample_t=now, **extra)  # type: ignore[arg-type]


def ramp(start: float, end: float, now: float = NOW, points: int = 5, step: float = 5.0) -> VariantMetrics:
    """A linearly rising (or falling) rate series ending at ``now``."""
    series = tuple(
        RatePoint(now - step * (points - 1 - i), start + (end - start) * i / (points - 1))
        for i in range(points)
    )
    return VariantMetrics(rate_series=series, newest_sample_t=now)


def settings(name: str = "small", **kw: object) -> VariantSettings:
    """Variant settings with a fixed 10 req/s per replica unless overridden."""
    base: dict[str, object] = {"capacity_per_replica_rps": 10.0, "max_replicas": 20}
    base.update(kw)
    return VariantSettings(name=name, **base)  # type: ignore[arg-type]


def one(
    metrics: VariantMetrics,
    current: int = 1,
    previous: VariantState | None = None,
    budget: int | None = None,
    extra: float = 0.0,
    **kw: object,
) -> ScalingInput:
    """A one-variant pool input."""
    vi = VariantInput(settings(**kw), metrics, current, previous, extra)
    return ScalingInput.single(PoolInput("pool", (vi,)), budget)


def only(inp: ScalingInput, now: float = NOW) -> VariantDecision:
    """The decision for the single variant of a single-pool input."""
    decision = decide(inp, now)
    (pool,) = decision.pools.values()
    (variant,) = pool.variants
    return variant
