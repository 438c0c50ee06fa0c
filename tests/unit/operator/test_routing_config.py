"""RoutingPolicy -> RouterConfig: weights, shortfall overflow, large-share cap, generations."""

from __future__ import annotations

from typing import Any

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, VariantStatus
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.controllers.routing_config import (
    band_accuracy,
    build_router_config,
    config_digest,
    effective_weights,
    plan_tiers,
    plan_weights,
)
from modelpool.routing.config import RouterConfig


def _pool(capacity: int | None = 100) -> ModelPoolSpec:
    def v(name: str, tier: str, cost: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "tier": tier,
            "model": {"name": f"m-{name}", "repository": "/m"},
            "cost": cost,
        }
        if capacity:
            out["scaling"] = {"capacityPerReplicaRps": capacity}
        return out

    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8},
            "variants": [v("large", "large", 20), v("small", "small", 1), v("int8", "quantized", 5)],
        }
    )


def _policy(**spec: Any) -> RoutingPolicySpec:
    base: dict[str, Any] = {
        "poolRef": {"name": "bank"},
        "mode": "weighted",
        "weights": [
            {"variant": "small", "weight": 60},
            {"variant": "int8", "weight": 30},
            {"variant": "large", "weight": 10},
        ],
        "routerSelector": {"matchLabels": {"app": "router"}},
    }
    base.update(spec)
    return RoutingPolicySpec.model_validate(base)


def _status(**shortfall: int) -> ModelPoolStatus:
    return ModelPoolStatus(
        variants=[
            VariantStatus(
                name=n,
                tier="small",
                desired_replicas=1,
                ready_replicas=1,
                capacity_shortfall_rps=shortfall.get(n, 0),
            )
            for n in ("small", "int8", "large")
        ]
    )


def test_weights_from_spec_unchanged_without_pressure() -> None:
    plan = plan_weights(_policy(), _pool(), _status())
    assert plan.weights == {"small": 60, "int8": 30, "large": 10}
    assert all(r == "from spec.weights" for r in plan.reasons.values())


def test_shortfall_moves_load_to_the_next_tier_up() -> None:
    # small's replica (100 req/s) serves 31.2 req/s within its 50 ms queue-time target, as the
    # scaler computes it, and lacks 31: half its share moves to int8.
    plan = plan_weights(_policy(), _pool(), _status(small=31))
    assert plan.weights == {"small": 30, "int8": 60, "large": 10}
    assert plan.reasons["small"] == (
        "gave 30 to int8: short 31 req/s under the GPU budget (62 req/s at weight 60, 31 servable)"
    )
    assert plan.reasons["int8"] == "took 30 from small (capacity shortfall)"
    assert sum(plan.weights.values()) == 100


def test_quality_floor_skips_a_tier_that_is_not_good_enough() -> None:
    policy = _policy(objectives={"qualityFloorPercent": 90})
    plan = plan_weights(policy, _pool(), _status(small=31), accuracy={"int8": 85.0, "large": 93.0})
    assert plan.weights == {"small": 30, "int8": 30, "large": 40}
    # with no variant meeting the floor nothing moves, and the reason says why
    plan = plan_weights(policy, _pool(), _status(small=31), accuracy={"int8": 85.0, "large": 89.0})
    assert plan.weights == {"small": 60, "int8": 30, "large": 10}
    assert "no other variant meets the quality floor: nothing moved" in plan.reasons["small"]


def test_large_share_cap() -> None:
    policy = _policy(
        weights=[{"variant": "small", "weight": 20}, {"variant": "large", "weight": 80}],
        objectives={"maxLargeSharePercent": 30},
    )
    plan = plan_weights(policy, _pool(), _status())
    assert plan.weights["large"] == 30
    assert plan.weights["int8"] == 50  # the best non-large tier takes the excess
    assert "capped" in plan.reasons["large"]


def test_router_config_for_every_mode_is_valid() -> None:
    for spec in (
        _policy(),
        _policy(
            mode="cascade", cascade={"draft": "small", "verifier": "large", "acceptThresholdPercent": 80}
        ),
        _policy(
            mode="tiered",
            tiered={
                "tiers": [
                    {"maxComplexityPercent": 40, "target": "small"},
                    {"maxComplexityPercent": 100, "target": "cascade"},
                ]
            },
            cascade={"draft": "int8", "verifier": "large"},
        ),
    ):
        pool = _pool()
        config = build_router_config("ns", "bank", spec, pool, plan_weights(spec, pool, None), generation=4)
        # The router's own validation accepts what the operator renders.
        again = RouterConfig.model_validate(config.model_dump(mode="json", by_alias=True))
        assert again.generation == 4
        assert [v.name for v in again.variants] == ["small", "int8", "large"]
        large = again.variant("large")
        assert large.triton_model == "m-large"
        assert large.endpoint_slice is not None and large.endpoint_slice.service == "bank-large"
        assert large.endpoint_slice.namespace == "ns"
        assert large.cost == 20.0
    assert again.tiers[0].max_complexity == 0.4
    assert again.cascade is not None and again.cascade.accept_threshold == 0.7


def test_digest_ignores_generation_but_not_weights() -> None:
    spec, pool = _policy(), _pool()
    plan = plan_weights(spec, pool, None)
    one = build_router_config("ns", "bank", spec, pool, plan, 1)
    two = build_router_config("ns", "bank", spec, pool, plan, 2)
    assert config_digest(one) == config_digest(two)
    moved = plan_weights(spec, pool, _status(small=10))
    assert config_digest(build_router_config("ns", "bank", spec, pool, moved, 1)) != config_digest(one)
    assert [w.variant for w in effective_weights(plan)] == ["int8", "large", "small"]


def _profile(name: str, buckets: list[tuple[float, float, int, float]], scorer: str = "heuristic") -> Any:
    from modelpool.models.profile import BucketAccuracy, CapabilityProfile, LatencyFigures

    latency = LatencyFigures(p50_ms=1, p95_ms=2, mean_ms=1, requests=10, concurrency=1)
    return CapabilityProfile(
        variant="small",
        model_name=f"m-{name}",
        model_digest="d",
        model_created="2026-11-22T00:00:00Z",
        created="2026-11-22T00:00:00Z",
        device="cpu",
        dataset="t",
        items=sum(b[2] for b in buckets),
        accuracy=0.9,
        complexity_scorer=scorer,
        accuracy_by_bucket=[
            BucketAccuracy(min_complexity=lo, max_complexity=hi, items=n, accuracy=acc)
            for lo, hi, n, acc in buckets
        ],
        latency_batch1=latency,
        latency_concurrent=latency,
        throughput_rps=100,
        capacity_per_replica_rps=100,
        memory_rss_bytes=1,
    )


def _tiered(floor: int | None = 90, kind: str = "heuristic") -> RoutingPolicySpec:
    return _policy(
        mode="tiered",
        tiered={
            "scorer": {"kind": kind, "path": "/s"} if kind == "torch" else {"kind": kind},
            "tiers": [
                {"maxComplexityPercent": 30, "target": "small"},
                {"maxComplexityPercent": 100, "target": "large"},
            ],
        },
        objectives={} if floor is None else {"qualityFloorPercent": floor},
    )


def test_per_bucket_accuracy_moves_a_band_under_the_floor() -> None:
    small = _profile("small", [(0.0, 0.1, 900, 0.97), (0.1, 0.3, 100, 0.70), (0.3, 1.0, 100, 0.4)])
    int8 = _profile("int8", [(0.0, 0.1, 900, 0.97), (0.1, 0.3, 100, 0.80), (0.3, 1.0, 100, 0.5)])
    large = _profile("large", [(0.0, 0.1, 900, 0.98), (0.1, 0.3, 100, 0.85), (0.3, 1.0, 100, 0.6)])
    profiles = {"small": small, "int8": int8, "large": large}
    # small on (0, 0.3]: (900*0.97 + 100*0.70) / 1000 = 0.943 >= 0.90: kept.
    kept = plan_tiers(_tiered(90), _pool(), profiles)
    assert [(t.max_complexity_percent, t.target) for t in kept] == [(30, "small"), (100, "large")]
    # A 95% floor: small (94.3%) fails, int8 (95.3%) meets it and is the cheapest above.
    moved = plan_tiers(_tiered(95), _pool(), profiles)
    assert moved[0].target == "int8"
    assert "94.3%" in moved[0].reason and "sent to int8" in moved[0].reason
    config = build_router_config(
        "ns", "bank", _tiered(95), _pool(), plan_weights(_tiered(95), _pool(), None), 1, moved
    )
    assert config.tiers[0].target == "int8"


def test_profiles_of_another_scorer_are_not_compared() -> None:
    small = _profile("small", [(0.0, 1.0, 100, 0.5)], scorer="torch:scorer")
    tiers = plan_tiers(_tiered(99, kind="heuristic"), _pool(), {"small": small})
    assert tiers[0].target == "small"
    assert "not heuristic" in tiers[0].reason
    assert band_accuracy(small, 0.0, 0.3) == 0.5
