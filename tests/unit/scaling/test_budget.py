"""GPU budget allocation: value per GPU, floors, cuts, shortfall, determinism, multi-pool."""

from __future__ import annotations

import itertools

from modelpool.scaling import PoolInput, ScalingInput, SharedBudget, VariantInput, decide
from unit.scaling.helpers import NOW, settings, steady


def _pool(name: str, gpu_pool: str = "gpus", **rates: tuple[float, dict[str, object]]) -> PoolInput:
    variants = tuple(VariantInput(settings(v, **kw), steady(rps), 1) for v, (rps, kw) in rates.items())
    return PoolInput(name, variants, gpu_pool)


def test_no_cut_when_budget_suffices() -> None:
    pool = _pool("p", small=(20.0, {}), large=(20.0, {}))
    d = decide(ScalingInput((pool,), {"gpus": 100}), NOW).pools["p"]
    assert all(v.cut_replicas == 0 and v.desired_replicas == v.wished_replicas for v in d.variants)
    assert "GPUs allocated" in d.budget_message
    assert "cut" not in d.budget_message


def test_priority_wins_budget_and_cuts_are_reported() -> None:
    pool = _pool("p", small=(40.0, {"priority": 1.0}), large=(40.0, {"priority": 5.0}))
    d = decide(ScalingInput((pool,), {"gpus": 8}), NOW).pools["p"]
    small, large = d.variant("small"), d.variant("large")
    assert small.desired_replicas + large.desired_replicas == 8
    assert large.desired_replicas == large.wished_replicas
    assert small.cut_replicas > 0
    assert "budget:" in small.cut_reason
    assert "priority 1" in small.cut_reason
    assert small.shortfall_rps > 0
    assert large.shortfall_rps == 0
    assert "cut p/small" in d.budget_message


def test_cheaper_gpus_per_replica_serve_more_value() -> None:
    # Same priority and demand; 'big' needs 4 GPUs per replica, so per GPU 'tiny' serves more.
    pool = _pool("p", tiny=(30.0, {}), big=(30.0, {"gpus_per_replica": 4}))
    d = decide(ScalingInput((pool,), {"gpus": 10}), NOW).pools["p"]
    assert d.variant("tiny").desired_replicas == d.variant("tiny").wished_replicas
    assert d.variant("big").cut_replicas > 0


def test_nobody_below_minimum_and_short_budget_reported() -> None:
    pool = _pool("p", small=(50.0, {"min_replicas": 3}), large=(50.0, {"min_replicas": 4}))
    d = decide(ScalingInput((pool,), {"gpus": 5}), NOW).pools["p"]
    assert d.variant("small").desired_replicas == 3
    assert d.variant("large").desired_replicas == 4
    assert "minimums need 7 GPUs but the budget is 5 (2 short)" in d.budget_message
    assert "raise the budget or lower minReplicas" in d.variant("small").cut_reason


def test_pools_share_one_gpu_pool_budget() -> None:
    a = _pool("a", v=(60.0, {"priority": 1.0}))
    b = _pool("b", v=(60.0, {"priority": 3.0}))
    other = _pool("c", gpu_pool="elsewhere", v=(60.0, {}))
    d = decide(ScalingInput((a, b, other), {"gpus": 10}), NOW)
    ga, gb = d.pools["a"].variant("v"), d.pools["b"].variant("v")
    assert ga.desired_replicas + gb.desired_replicas == 10
    assert gb.desired_replicas == gb.wished_replicas
    assert ga.cut_replicas > 0
    assert d.pools["c"].variant("v").cut_replicas == 0
    assert set(d.budget_reports) == {"gpus", "elsewhere"}


def test_allocation_is_deterministic_and_order_independent() -> None:
    specs = {"x": (25.0, {}), "y": (25.0, {}), "z": (25.0, {})}
    results = set()
    for perm in itertools.permutations(specs):
        pool = _pool("p", **{k: specs[k] for k in perm})
        d = decide(ScalingInput((pool,), {"gpus": 7}), NOW).pools["p"]
        results.add(tuple(sorted((v.name, v.desired_replicas) for v in d.variants)))
    assert len(results) == 1
    (alloc,) = results
    assert sum(n for _, n in alloc) == 7


def test_budget_serves_demand_before_headroom() -> None:
    # 'busy' has unserved demand; 'idle' only wants headroom replicas kept by its min.
    pool = _pool("p", busy=(45.0, {}), idle=(0.0, {"min_replicas": 1}))
    d = decide(ScalingInput((pool,), {"gpus": 6}), NOW).pools["p"]
    assert d.variant("idle").desired_replicas == 1
    assert d.variant("busy").desired_replicas == 5


def _shared_input(pool: PoolInput, budget: int, others: PoolInput, held: int) -> ScalingInput:
    """``pool`` decided alone, with the claims ``others`` made in their own pass and ``held`` GPUs."""
    elsewhere = decide(ScalingInput((others,), {"gpus": budget}), NOW)
    shared = SharedBudget(elsewhere.claims["gpus"], held, (others.name,))
    return ScalingInput((pool,), {"gpus": budget}, {"gpus": shared})


def test_a_budget_shared_with_pools_decided_elsewhere_goes_by_value_across_them() -> None:
    mine = _pool("ns-a/mine", small=(40.0, {"priority": 1.0}))
    theirs = _pool("ns-b/theirs", small=(40.0, {"priority": 5.0}))
    alone = decide(ScalingInput((mine,), {"gpus": 8}), NOW).pools["ns-a/mine"].variant("small")
    d = decide(_shared_input(mine, 8, theirs, held=1), NOW).pools["ns-a/mine"]
    small = d.variant("small")
    joint = decide(ScalingInput((mine, theirs), {"gpus": 8}), NOW).pools["ns-a/mine"].variant("small")
    # What deciding both together gives this pool: the higher-priority pool's wish comes first.
    assert small.desired_replicas == joint.desired_replicas < alone.desired_replicas
    assert small.cut_replicas > 0 and "went to higher value per GPU" in small.cut_reason
    assert "shared with ns-b/theirs, holding 1 GPUs" in d.budget_message


def test_gpus_another_pool_still_holds_are_never_taken() -> None:
    mine = _pool("ns-a/mine", small=(40.0, {"priority": 5.0}))
    theirs = _pool("ns-b/theirs", small=(40.0, {"priority": 1.0}))
    share = decide(_shared_input(mine, 8, theirs, held=1), NOW).pools["ns-a/mine"].variant("small")
    waiting = decide(_shared_input(mine, 8, theirs, held=6), NOW).pools["ns-a/mine"].variant("small")
    assert share.desired_replicas > 2  # its value share, once the other pool has shrunk
    assert waiting.desired_replicas == 2  # 8 GPUs, 6 still held by the other pool
    assert f"{share.desired_replicas} once the pools sharing GPU pool 'gpus'" in waiting.cut_reason
    assert "they hold 6 of 8" in waiting.cut_reason
    floor = _pool("ns-a/mine", small=(40.0, {"min_replicas": 2}))
    kept = decide(_shared_input(floor, 8, theirs, held=8), NOW).pools["ns-a/mine"].variant("small")
    assert kept.desired_replicas == 2  # minimums are kept whatever the others hold


def test_pools_deciding_in_turn_converge_without_over_committing() -> None:
    """Two pools on one GPU pool, each decided in its own pass with the other's latest claims and
    held GPUs: the total never exceeds the budget, and they end where one joint decision puts them."""
    pools = {
        "ns/a": _pool("ns/a", small=(60.0, {"priority": 1.0})),
        "ns/b": _pool("ns/b", small=(60.0, {"priority": 3.0})),
    }
    budget = 8
    held = {"ns/a": 7, "ns/b": 1}  # a grew first, while b was idle
    claims = {
        name: decide(ScalingInput((p,), {"gpus": budget}), NOW).claims["gpus"] for name, p in pools.items()
    }
    for turn in range(6):
        name = ("ns/a", "ns/b")[turn % 2]
        other = "ns/b" if name == "ns/a" else "ns/a"
        shared = SharedBudget(claims[other], held[other], (other,))
        d = decide(ScalingInput((pools[name],), {"gpus": budget}, {"gpus": shared}), NOW)
        claims[name] = d.claims["gpus"]
        held[name] = d.pools[name].variant("small").desired_replicas
        assert sum(held.values()) <= budget
    joint = decide(ScalingInput(tuple(pools.values()), {"gpus": budget}), NOW)
    assert held == {n: joint.pools[n].variant("small").desired_replicas for n in pools}
    assert held["ns/b"] > held["ns/a"]


def test_three_pools_deciding_in_every_order_converge_without_over_committing() -> None:
    """Three pools on one GPU pool, decided one at a time in each of the six orders (as the
    operator's passes may fall), each with the others' latest claims and held GPUs: the GPU pool
    is never over-committed, and every order ends where one joint decision puts them."""
    pools = {
        "ns/a": _pool("ns/a", small=(60.0, {"priority": 1.0})),
        "ns/b": _pool("ns/b", small=(40.0, {"priority": 2.0})),
        "ns/c": _pool("ns/c", small=(60.0, {"priority": 4.0})),
    }
    budget = 9
    joint = decide(ScalingInput(tuple(pools.values()), {"gpus": budget}), NOW)
    wanted = {n: joint.pools[n].variant("small").desired_replicas for n in pools}
    assert sum(wanted.values()) == budget and len(set(wanted.values())) > 1  # a real contest
    alone = {n: decide(ScalingInput((p,), {"gpus": budget}), NOW).claims["gpus"] for n, p in pools.items()}
    for order in itertools.permutations(pools):
        held = {"ns/a": 7, "ns/b": 1, "ns/c": 1}  # a grew first, while the others were idle
        claims = dict(alone)
        for turn in range(3 * len(pools)):
            name = order[turn % len(order)]
            others = tuple(n for n in pools if n != name)
            shared = SharedBudget(
                tuple(c for n in others for c in claims[n]), sum(held[n] for n in others), others
            )
            d = decide(ScalingInput((pools[name],), {"gpus": budget}, {"gpus": shared}), NOW)
            claims[name] = d.claims["gpus"]
            held[name] = d.pools[name].variant("small").desired_replicas
            assert sum(held.values()) <= budget, (order, turn, held)
        assert held == wanted, order
