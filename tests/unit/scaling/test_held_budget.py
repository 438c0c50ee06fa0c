"""Holds meet the GPU budget and the routing: held replicas never over-commit a budget, a held
variant's old demand expires, a hold's reason states what it keeps, and a stale hold names a
clock ahead of Prometheus'."""

from __future__ import annotations

from modelpool.api.modelpool import ModelPoolStatus, VariantStatus
from modelpool.controllers.scaling_planner import expected_overflow
from modelpool.scaling import (
    PoolInput,
    ScalingInput,
    SharedBudget,
    VariantInput,
    VariantMetrics,
    VariantState,
    decide,
)
from unit.operator.test_scaling_planner import _spec
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


def test_a_metrics_outage_holds_a_tier_scaled_to_zero_at_zero() -> None:
    """The last decision scaled the idle small tier (scaleToZero, minReplicas 1) to zero; the hold
    clamped to [minReplicas, maxReplicas] and started a GPU replica of it during an outage of its
    metrics (the large tier serves), instead of holding that decision."""
    previous = VariantState(replicas=0, decided_at=NOW - 10, recommendations=((NOW - 10, 0),))
    small = VariantInput(settings("small", scale_to_zero=True), DOWN, 0, previous)
    large = VariantInput(settings("large"), steady(5.0, queue_time_s=0.001, pending_requests=0.0), 1)
    v = decide(ScalingInput.single(PoolInput("p", (small, large))), NOW).pools["p"].variant("small")
    assert v.held
    assert v.desired_replicas == 0, v.reason
    assert v.reason == "holding 0 replicas: metrics missing: Prometheus unreachable"
    # A decision above zero is held within minReplicas as before.
    one = VariantInput(settings("small", scale_to_zero=True, min_replicas=2), DOWN, 1, previous)
    v = decide(ScalingInput.single(PoolInput("p", (one, large))), NOW).pools["p"].variant("small")
    assert v.held and v.desired_replicas == 2


def _measured_and_held() -> VariantInput:
    """8 replicas served 50 req/s at the last decision, 5 s ago, with a capacity measured from the
    compute time (the CRD default: no capacityPerReplicaRps); now one query failed."""
    previous = VariantState(
        replicas=8,
        decided_at=NOW - 5,
        recommendations=((NOW - 5, 8),),
        last_demand_rps=50.0,
        capacity_rps=10.0,
        demand_at=NOW - 5,
    )
    problem = VariantMetrics(problem="metrics missing: Prometheus at http://prom did not answer within 5s")
    return VariantInput(settings("small", capacity_per_replica_rps=None), problem, 8, previous)


def test_a_held_variant_measured_before_reports_no_shortfall_its_replicas_served() -> None:
    """The hold offered only capacityPerReplicaRps (unset), so the variant's whole last demand was
    its shortfall, which the operator moves onto the next tier (``expected_overflow``) and the
    RoutingPolicy off it, although its 8 replicas of 10 req/s served the 50 req/s a moment ago.
    It now counts the capacity last measured, as a decision does."""
    pool = PoolInput("p", (_measured_and_held(),))
    v = decide(ScalingInput.single(pool), NOW).pools["p"].variant("small")
    assert v.held and v.desired_replicas == 8
    assert v.capacity_per_replica_rps == 10.0
    assert v.shortfall_rps == 0.0, (v.shortfall_rps, v.reason)
    assert v.state is not None and v.state.capacity_rps == 10.0  # still remembered
    status = ModelPoolStatus(
        variants=[VariantStatus(name="small", tier="small", capacity_shortfall_rps=round(v.shortfall_rps))]
    )
    assert expected_overflow(_spec(), status)["large"] == 0.0
    # Cut to 2 replicas by a budget lowered meanwhile, the held variant is short again.
    cut = decide(ScalingInput.single(pool, 2), NOW).pools["p"].variant("small")
    assert cut.desired_replicas == 2 and cut.shortfall_rps > 25.0


def test_a_held_variant_with_no_capacity_known_reports_no_shortfall() -> None:
    """Never measured (no compute time yet, no setting, no profile): the hold knows nothing of
    what its replicas serve, so it cannot tell a shortfall either. It reported its whole demand;
    it now reports none, and the budget ranks its held replicas as before (as headroom)."""
    unknown = _held("small", 4, demand=40.0, capacity_per_replica_rps=None)
    v = decide(ScalingInput.single(PoolInput("p", (unknown,))), NOW).pools["p"].variant("small")
    assert v.held and v.desired_replicas == 4 and v.capacity_per_replica_rps is None
    assert v.shortfall_rps == 0.0 and v.demand_rps == 40.0
    worth = _held("worth", 4, demand=40.0)
    d = decide(ScalingInput.single(PoolInput("p", (unknown, worth)), 6), NOW).pools["p"]
    assert (d.variant("small").desired_replicas, d.variant("worth").desired_replicas) == (2, 4)
    assert d.variant("small").shortfall_rps == 0.0
