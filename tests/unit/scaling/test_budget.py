"""GPU budget allocation: value per GPU, floors, cuts, shortfall, determinism, multi-pool."""

from __future__ import annotations

import itertools

from modelpool.scaling import PoolInput, ScalingInput, VariantInput, decide
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
