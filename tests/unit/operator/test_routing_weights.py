"""How a pool's capacity and the policy's objectives move the weights (``plan_weights``).

The feedback tests model the loop the operator runs: the routers split the traffic by the last
weights planned; the scaler's next decision sees each variant's share (plus the load routing is
about to move onto it, ``expected_overflow``) and writes its demand, granted replicas and
shortfall into the pool's status; the policy's next pass plans the weights from that status.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, ScalerMemory, VariantStatus
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.controllers.routing_config import plan_weights
from modelpool.controllers.scaling_planner import expected_overflow, settings_for
from modelpool.scaling.queueing import max_rate_for_replicas, replicas_for_target

NOW = 1_700_000_000.0


def _variant(name: str, tier: str, capacity: int | None = 100, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "tier": tier, "model": {"name": f"m-{name}", "repository": "/m"}}
    if capacity is not None:
        out["scaling"] = {"capacityPerReplicaRps": capacity}
    return {**out, "maxReplicas": 10, **extra}


def _pool(*variants: dict[str, Any], budget: int = 8) -> ModelPoolSpec:
    chosen = list(variants) or [_variant("small", "small"), _variant("large", "large")]
    return ModelPoolSpec.model_validate({"gpuPool": {"gpuBudget": budget}, "variants": chosen})


def _policy(weights: dict[str, int], **spec: Any) -> RoutingPolicySpec:
    return RoutingPolicySpec.model_validate(
        {
            "poolRef": {"name": "bank"},
            "mode": "weighted",
            "weights": [{"variant": n, "weight": w} for n, w in weights.items()],
            "routerSelector": {"matchLabels": {"app": "router"}},
            **spec,
        }
    )


def _servable(pool: ModelPoolSpec, name: str, replicas: int) -> float:
    """What ``replicas`` replicas of the variant serve within its queue-time target, as the scaler
    computes it (``VariantWish.servable_rps``)."""
    variant = next(v for v in pool.variants if v.name == name)
    s = settings_for(variant)
    assert s.capacity_per_replica_rps is not None
    return max_rate_for_replicas(
        replicas, s.capacity_per_replica_rps, s.instances_per_replica, s.target_queue_time_s, s.slo_attainment
    )


def _decide(
    pool: ModelPoolSpec,
    weights: dict[str, int],
    traffic: float,
    replicas: dict[str, int],
    previous: ModelPoolStatus | None,
) -> ModelPoolStatus:
    """One scaler decision on the traffic the routers send at ``weights`` (model of the operator's)."""
    extra = expected_overflow(pool, previous)
    total = sum(weights.values())
    variants = []
    for v in pool.variants:
        demand = traffic * weights[v.name] / total + extra[v.name]
        short = max(0.0, demand - _servable(pool, v.name, replicas[v.name]))
        variants.append(
            VariantStatus(
                name=v.name,
                tier=v.tier,
                desired_replicas=replicas[v.name],
                ready_replicas=replicas[v.name],
                gpus=replicas[v.name],
                capacity_shortfall_rps=round(short),
                scaler=ScalerMemory(decided_at=NOW, last_demand_rps=demand),
            )
        )
    requested = sum(replicas.values())
    return ModelPoolStatus(
        gpu_budget=pool.gpu_pool.gpu_budget,
        gpus_requested=requested,
        gpus_in_use=requested,
        variants=variants,
    )


# --- maxLargeSharePercent -------------------------------------------------------------------------


def test_two_large_variants_stay_within_the_cap() -> None:
    """Each large variant's cut was rounded on its own (half to even): 98/1/1 with a 1% cap cut
    nothing, and the routers ran 2% large while the status said "capped"."""
    pool = _pool(_variant("small", "small"), _variant("big-a", "large"), _variant("big-b", "large"))
    plan = plan_weights(
        _policy({"small": 98, "big-a": 1, "big-b": 1}, objectives={"maxLargeSharePercent": 1}), pool, None
    )
    assert plan.weights["big-a"] + plan.weights["big-b"] == 1
    assert plan.weights["small"] == 99
    assert plan.reasons["big-a"].startswith("capped") and plan.reasons["big-b"].startswith("capped")


@settings(max_examples=300, deadline=None, database=None)
@given(
    small=st.integers(0, 1000),
    large=st.lists(st.integers(0, 1000), min_size=1, max_size=5),
    cap=st.integers(0, 100),
)
def test_the_large_share_never_exceeds_the_cap(small: int, large: list[int], cap: int) -> None:
    names = [f"big-{i}" for i in range(len(large))]
    pool = _pool(_variant("small", "small"), *(_variant(n, "large") for n in names))
    weights = {"small": small, **dict(zip(names, large, strict=True))}
    if sum(weights.values()) == 0:
        weights["small"] = 1
    plan = plan_weights(_policy(weights, objectives={"maxLargeSharePercent": cap}), pool, None)
    total = sum(plan.weights.values())
    assert total == sum(weights.values())  # a cut goes somewhere: the total is kept
    assert all(w >= 0 for w in plan.weights.values())
    assert sum(plan.weights[n] for n in names) * 100 <= cap * total
    # no more is cut than the cap needs, and no large variant gains
    assert sum(plan.weights[n] for n in names) == min(sum(large), total * cap // 100)
    assert all(plan.weights[n] <= weights[n] for n in names)


# --- qualityFloorPercent under the cap ------------------------------------------------------------


def test_the_cap_gives_nothing_to_a_variant_under_the_quality_floor() -> None:
    """No non-large variant met qualityFloorPercent, yet the cap's excess went to the last of them:
    the floor the API documents (the least accuracy a variant needs to take overflow) was broken."""
    pool = _pool(_variant("small", "small"), _variant("int8", "quantized"), _variant("large", "large"))
    policy = _policy(
        {"small": 20, "int8": 20, "large": 60},
        objectives={"maxLargeSharePercent": 30, "qualityFloorPercent": 90},
    )
    plan = plan_weights(policy, pool, None, accuracy={"small": 70.0, "int8": 80.0, "large": 95.0})
    assert plan.weights == {"small": 20, "int8": 20, "large": 60}
    assert "not capped at 30%" in plan.reasons["large"]
    assert "90% quality floor" in plan.reasons["large"]
    # one variant meeting the floor takes the whole excess
    plan = plan_weights(policy, pool, None, accuracy={"small": 70.0, "int8": 91.0, "large": 95.0})
    assert plan.weights == {"small": 20, "int8": 50, "large": 30}
    assert plan.reasons["int8"] == "took the large tier's excess over 30%"


# --- the capacity a shortfall is measured against -------------------------------------------------


def _one_short(scaler: ScalerMemory | None = None) -> ModelPoolStatus:
    """small: 10 replicas 1 req/s short under the budget (about 1000 served)."""
    return ModelPoolStatus(
        variants=[
            VariantStatus(
                name="small",
                tier="small",
                desired_replicas=10,
                ready_replicas=10,
                capacity_shortfall_rps=1,
                scaler=scaler,
            ),
            VariantStatus(name="large", tier="large", desired_replicas=1, ready_replicas=1),
        ]
    )


def test_a_shortfall_of_unknown_capacity_moves_nothing_and_says_so() -> None:
    """Without scaling.capacityPerReplicaRps (the default) any shortfall moved half the weight."""
    pool = _pool(_variant("small", "small", capacity=None), _variant("large", "large", capacity=None))
    plan = plan_weights(_policy({"small": 100, "large": 1}), pool, _one_short())
    assert plan.weights == {"small": 100, "large": 1}
    assert "capacity per replica is unknown" in plan.reasons["small"]
    assert "nothing moved" in plan.reasons["small"]


def test_a_small_shortfall_moves_a_small_share_with_the_profiles_capacity() -> None:
    pool = _pool(_variant("small", "small", capacity=None), _variant("large", "large", capacity=None))
    plan = plan_weights(_policy({"small": 100, "large": 1}), pool, _one_short(), capacity={"small": 100.0})
    assert plan.weights == {"small": 99, "large": 2}
    assert plan.reasons["small"].startswith("gave 1 to large: short 1 req/s")


def test_a_small_shortfall_moves_a_small_share_with_the_scalers_measured_capacity() -> None:
    pool = _pool(_variant("small", "small", capacity=None), _variant("large", "large", capacity=None))
    memory = ScalerMemory(decided_at=NOW, capacity_per_replica_rps=100.0)
    plan = plan_weights(_policy({"small": 100, "large": 1}), pool, _one_short(memory))
    assert plan.weights == {"small": 99, "large": 2}


# --- the feedback loop ----------------------------------------------------------------------------


def _run(
    pool: ModelPoolSpec,
    policy: RoutingPolicySpec,
    traffic: float,
    grant: Any,
    passes: int = 10,
) -> tuple[list[dict[str, int]], ModelPoolStatus]:
    """Alternate scaler decisions and policy passes; ``grant(k, status)`` gives decision k's replicas."""
    weights = {w.variant: w.weight for w in policy.weights}
    status: ModelPoolStatus | None = None
    seen = []
    for k in range(passes):
        status = _decide(pool, weights, traffic, grant(k, status, weights), status)
        weights = plan_weights(policy, pool, status).weights
        seen.append(weights)
    assert status is not None
    return seen, status


def test_a_budget_short_tier_converges_instead_of_flapping() -> None:
    """The shift was memoryless while the scaler's demand is what the routers send, which the shift
    itself lowers: 75/25, 10/90, 75/25, ... every scaler period."""
    pool = _pool(budget=7)  # small 1 + large 6: the budget is spent
    policy = _policy({"small": 75, "large": 25})
    seen, status = _run(pool, policy, 300.0, lambda k, s, w: {"small": 1, "large": 6})
    assert seen[-1] == seen[-2] == seen[-3] == seen[-4] == seen[-5], seen
    small = seen[-1]["small"]
    served = _servable(pool, "small", 1)
    # the most small serves within its target at the traffic: one more and it would be short
    assert 300.0 * small / 100 <= served < 300.0 * (small + 1) / 100
    short = next(v for v in status.variants if v.name == "small")
    assert short.capacity_shortfall_rps == 0


def test_the_weight_comes_back_when_the_budget_frees() -> None:
    """Held at what its replicas serve, the short tier's demand no longer shows what it lacks: the
    GPUs the budget leaves unused count, so it is offered the load and the scaler grows it."""
    policy = _policy({"small": 75, "large": 25})
    budget = {"now": 7}

    def grant(k: int, status: ModelPoolStatus | None, weights: dict[str, int]) -> dict[str, int]:
        if k >= 4:
            budget["now"] = 12
        demand = 300.0 * weights["small"] / 100
        wish = replicas_for_target(demand, 100.0, 1, 0.05, 0.99, 10)
        return {"small": max(1, min(wish, budget["now"] - 6)), "large": 6}

    seen: list[dict[str, int]] = []
    weights = {"small": 75, "large": 25}
    status: ModelPoolStatus | None = None
    for k in range(12):
        replicas = grant(k, status, weights)
        pool_now = _pool(budget=budget["now"])
        status = _decide(pool_now, weights, 300.0, replicas, status)
        weights = plan_weights(policy, pool_now, status).weights
        seen.append(weights)
    assert seen[3]["small"] < 75  # held while the budget is spent
    assert seen[-1] == seen[-2] == {"small": 75, "large": 25}, seen


def test_a_tier_that_serves_its_share_keeps_it() -> None:
    pool = _pool(budget=7)
    policy = _policy({"small": 75, "large": 25})
    seen, _ = _run(pool, policy, 40.0, lambda k, s, w: {"small": 1, "large": 6}, passes=3)
    assert seen == [{"small": 75, "large": 25}] * 3


def test_other_modes_move_what_the_scaler_reports_short() -> None:
    """Tiered and cascade routers do not split by weight: the variant's demand does not follow its
    weight, so its weight's share of the pool's demand means nothing there."""
    pool = _pool(budget=7)
    tiered = {"tiers": [{"maxComplexityPercent": 100, "target": "small"}]}
    policy = _policy({"small": 75, "large": 25}, mode="tiered", tiered=tiered)
    # the routers send small 30 req/s, which its replica serves: nothing moves
    status = _decide(pool, {"small": 10, "large": 90}, 300.0, {"small": 1, "large": 6}, None)
    assert plan_weights(policy, pool, status).weights == {"small": 75, "large": 25}
    # 225 req/s: the scaler's shortfall (194) against the 31 it serves
    status = _decide(pool, {"small": 75, "large": 25}, 300.0, {"small": 1, "large": 6}, None)
    assert plan_weights(policy, pool, status).weights == {"small": 10, "large": 90}


def test_a_status_edited_by_hand_moves_nothing() -> None:
    pool = _pool()
    bad = ModelPoolStatus(
        gpu_budget=-5,
        gpus_requested=100,
        variants=[
            VariantStatus(name="small", tier="small", desired_replicas=-3, capacity_shortfall_rps=-1000),
            VariantStatus(name="large", tier="large", desired_replicas=1, capacity_shortfall_rps=-1),
        ],
    )
    plan = plan_weights(_policy({"small": 75, "large": 25}), pool, bad)
    assert plan.weights == {"small": 75, "large": 25}


def test_a_shared_gpu_pool_counts_no_spare_gpus() -> None:
    """This pool's status does not show what the other pools on its GPU pool hold."""
    shared = ModelPoolSpec.model_validate(
        {**_pool(budget=12).model_dump(by_alias=True), "gpuPool": {"name": "g", "gpuBudget": 12}}
    )
    policy = _policy({"small": 75, "large": 25})
    status = _decide(shared, {"small": 75, "large": 25}, 300.0, {"small": 1, "large": 6}, None)
    assert plan_weights(policy, shared, status).weights == {"small": 10, "large": 90}
    own = _pool(budget=12)  # 5 GPUs unrequested: small could run 6 replicas, which serve 225 req/s
    status = _decide(own, {"small": 75, "large": 25}, 300.0, {"small": 1, "large": 6}, None)
    assert plan_weights(policy, own, status).weights == {"small": 75, "large": 25}
