"""Holds meet the GPU budget and the routing: held replicas never over-commit a budget, a held
variant's old demand expires, a hold's reason states what it keeps, and a stale hold names a
clock ahead of Prometheus'."""

from __future__ import annotations

from modelpool.scaling import (
    PoolInput,
    ScalingInput,
    SharedBudget,
    VariantInput,
    VariantMetrics,
    VariantState,
    decide,
)
from unit.scaling.helpers import NOW, settings, steady

DOWN = VariantMetrics(problem="metrics missing: Prometheus unreachable")


def _held(name: str, replicas: int, demand: float = 0.0, **kw: object) -> VariantInput:
    """A variant running ``replicas`` whose metrics are out, last decided 15 s ago at ``demand``."""
    state = VariantState(replicas=replicas, decided_at=NOW - 15, last_demand_rps=demand)
    return VariantInput(settings(name, **kw), DOWN, replicas, state)


def test_held_replicas_above_a_lowered_budget_are_cut_to_it() -> None:
    """gpuBudget lowered 8 -> 4 while Prometheus is down and 8 replicas run: the budget is a hard
    promise, so the hold keeps 4, and its reason and the report say held replicas were cut (before,
    8 were kept and the report blamed minReplicas: 'minimums need 8 GPUs but the budget is 4')."""
    pool = PoolInput("p", (_held("small", 8, max_replicas=8),))
    d = decide(ScalingInput.single(pool, 4), NOW).pools["p"]
    v = d.variant("small")
    assert v.desired_replicas == 4
    assert v.held and d.metrics_held
    assert v.reason.startswith("holding 4 replicas: metrics missing: Prometheus unreachable; budget: ")
    assert "4 of 8 held replicas kept" in v.cut_reason
    assert "minimums need" not in d.budget_message
    assert "held replicas need 8 GPUs" in d.budget_message


def test_held_replicas_are_cut_lowest_value_first_and_never_below_min_replicas() -> None:
    worth = _held("worth", 4, demand=40.0, priority=5.0)
    cheap = _held("cheap", 4, demand=40.0, priority=1.0)
    d = decide(ScalingInput.single(PoolInput("p", (cheap, worth)), 6), NOW).pools["p"]
    assert (d.variant("worth").desired_replicas, d.variant("cheap").desired_replicas) == (4, 2)
    floor = _held("small", 8, min_replicas=5)
    d = decide(ScalingInput.single(PoolInput("p", (floor,)), 3), NOW).pools["p"]
    assert d.variant("small").desired_replicas == 5  # minimums are kept regardless
    assert "minimums need 5 GPUs but the budget is 3" in d.budget_message


def test_held_replicas_never_over_commit_a_shared_gpu_pool() -> None:
    """Another pool holds 4 of the shared 8 GPUs; this one's 6 held replicas get the 4 left."""
    pool = PoolInput("ns/p", (_held("small", 6),), "shared")
    shared = {"shared": SharedBudget(held_gpus=4, members=("ns/other",))}
    d = decide(ScalingInput((pool,), {"shared": 8}, shared), NOW).pools["ns/p"]
    assert d.variant("small").desired_replicas == 4


def test_a_cut_keeps_the_tier_that_serves() -> None:
    """Every minimum 0 and no GPU left: the held tier that serves keeps its replica; the budget
    does not swap it for the final tier at zero."""
    serving = _held("small", 1, min_replicas=0)
    last = VariantInput(settings("large", min_replicas=0), DOWN, 0, VariantState(replicas=0, decided_at=NOW))
    d = decide(ScalingInput.single(PoolInput("p", (serving, last)), 0), NOW).pools["p"]
    assert (d.variant("small").desired_replicas, d.variant("large").desired_replicas) == (1, 0)


def test_a_held_last_tier_raised_to_one_says_it_keeps_one() -> None:
    """Before: 'holding 0 replicas: ...; kept at 1 as the last tier serving' for a decision of 1."""
    only_tier = _held("small", 0, min_replicas=0, scale_to_zero=True)
    v = decide(ScalingInput.single(PoolInput("p", (only_tier,))), NOW).pools["p"].variant("small")
    assert v.desired_replicas == 1
    assert v.reason == (
        "holding 1 replicas: metrics missing: Prometheus unreachable; kept at 1 as the last tier serving"
    )


def test_a_held_variants_demand_and_overflow_expire_after_its_staleness_limit() -> None:
    """A variant measured 50 req/s on 2 replicas (30 req/s short), then its metrics went out.
    Its shortfall is what routing pushes onto the next tier (``expected_overflow``): it may last
    one staleness limit (30 s), not the whole outage (before, it never expired)."""
    good = decide(
        ScalingInput.single(PoolInput("p", (VariantInput(settings(), steady(50.0), 2),)), 2), NOW
    ).pools["p"]
    state = good.variant("small").state
    assert state is not None and good.variant("small").shortfall_rps > 0
    shortfalls = []
    for t in (NOW + 10, NOW + 20, NOW + 30, NOW + 40, NOW + 50):
        held = VariantInput(settings(), DOWN, 2, state)
        v = decide(ScalingInput.single(PoolInput("p", (held,)), 2), t).pools["p"].variant("small")
        assert v.held and v.desired_replicas == 2 and v.state is not None
        shortfalls.append(round(v.shortfall_rps))
        state = v.state
    assert shortfalls[:3] == [shortfalls[0]] * 3 and shortfalls[0] > 0
    assert shortfalls[3:] == [0, 0]
    assert state.last_demand_rps == 0.0  # stored so: a restarted operator does not bring it back
    # a state restored from the status has no demand time: its last decision's counts
    restored = VariantState(replicas=2, decided_at=NOW, last_demand_rps=50.0)
    late = VariantInput(settings(), DOWN, 2, restored)
    v = decide(ScalingInput.single(PoolInput("p", (late,)), 2), NOW + 31).pools["p"].variant("small")
    assert v.shortfall_rps == 0.0 and v.demand_rps == 0.0


def test_a_stale_hold_says_the_operators_clock_is_ahead_of_prometheus() -> None:
    """The operator's clock 120 s ahead of Prometheus': every sample looks 2 minutes old. The hold
    says the clocks are apart (a clock behind was already diagnosed as samples in the future)."""
    ahead = VariantMetrics(**{**steady(10.0, now=NOW - 121).__dict__, "prometheus_now": NOW - 120})
    v = (
        decide(ScalingInput.single(PoolInput("p", (VariantInput(settings(), ahead, 2, None),))), NOW)
        .pools["p"]
        .variant("small")
    )
    assert v.held
    assert "metrics stale: newest sample older than staleAfter 30s" in v.reason
    assert (
        "the operator's clock is ~120s ahead of Prometheus' (the sample is fresh by Prometheus' clock)"
        in (v.reason)
    )
    # Prometheus agrees the sample is old: a real outage of the scrape, no word about clocks
    old = VariantMetrics(**{**steady(10.0, now=NOW - 121).__dict__, "prometheus_now": NOW - 1})
    v = (
        decide(ScalingInput.single(PoolInput("p", (VariantInput(settings(), old, 2, None),))), NOW)
        .pools["p"]
        .variant("small")
    )
    assert v.held and "clock" not in v.reason
