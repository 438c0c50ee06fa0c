"""The operator's side of holds and shared GPU pools: the budget condition of replicas kept above
the budget, claims of a pool that moves to another GPU pool, and Prometheus' clock in a stale hold."""

from __future__ import annotations

from modelpool.api import conditions as c
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.pool_status import ChildIssues, ReplicaPlan, compute_status
from modelpool.scaling.types import VariantMetrics
from unit.operator.test_scaling_planner import (
    HELD,
    FakeReader,
    _cluster_planner,
    _index_of,
    _metrics,
    _planned_gpus,
    _planner,
    _shared_specs,
    _spec,
)


def test_replicas_kept_above_the_budget_do_not_fit_it() -> None:
    """8 replicas kept from before gpuBudget went down to 4 (no decision since: Prometheus not
    configured, settings refused, or the interval not up): before, 'Fits: 8 of 4 GPUs requested'."""
    spec = ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 4},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "m", "repository": "/m"},
                    "maxReplicas": 8,
                }
            ],
        }
    )
    plans = {"small": ReplicaPlan(8, "holding 8 replicas: metrics missing")}
    status = compute_status(spec, 1, plans, {"small": None}, [], [], ChildIssues(), "2024-01-01T00:00:00Z")
    fits = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert fits is not None and fits.status == "False" and fits.reason == "HeldAboveBudget"
    assert "request 8 GPUs but the budget is 4" in fits.message
    assert "minReplicas of all variants need 1" in fits.message
    within = compute_status(
        spec, 1, {"small": ReplicaPlan(4, "")}, {"small": None}, [], [], ChildIssues(), "2024-01-01T00:00:00Z"
    )
    fits = c.find(within.conditions, c.GPU_BUDGET_FITS)
    assert fits is not None and (fits.status, fits.reason) == ("True", "Fits")


async def test_a_pool_that_moves_to_another_gpu_pool_leaves_no_claim_behind() -> None:
    """chat took 6 of the shared 8 GPUs, moved to another GPU pool (and shrank there), then came
    back. Its old grant must not count for code before chat decides on 'shared' again: before,
    code got 8 - 6 = 2 while chat held its 2 minimums."""
    now = 1_000.0
    reader = FakeReader({"m-small": _metrics(80.0, now), "m-large": _metrics(40.0, now)})
    specs = _shared_specs({"team-a/chat": 0, "team-b/code": 0})
    minimums = {pool: {"small": 1, "large": 1} for pool in specs}
    planner = _cluster_planner(reader)
    planner.members = _index_of({"team-b/code": specs["team-b/code"]}, minimums)  # chat not in yet
    chat = await _planned_gpus(planner, specs, minimums, "team-a/chat", now)
    assert sum(p.replicas for p in chat.values()) == 6  # code holds its 2 minimums
    specs["team-a/chat"]["gpuPool"]["name"] = "elsewhere"
    await _planned_gpus(planner, specs, minimums, "team-a/chat", now + 1)  # no decision due yet
    assert "team-a/chat" not in planner._claims.get("shared", {})
    assert "team-a/chat" not in planner._granted.get("shared", {})
    specs["team-a/chat"]["gpuPool"]["name"] = "shared"  # back, at its minimums (its status says so)
    planner.members = _index_of(specs, minimums)
    code = await _planned_gpus(planner, specs, minimums, "team-b/code", now + 2)
    assert sum(p.replicas for p in code.values()) == 8 - 2


class ClockedReader(FakeReader):
    """A fake reader that also answers ``time()`` with Prometheus' clock."""

    def __init__(self, by_model: dict[str, VariantMetrics], prometheus_now: float) -> None:
        super().__init__(by_model)
        self.prometheus_now = prometheus_now
        self.asked: list[str] = []

    async def scalar(self, promql: str, at: float | None = None) -> float | None:
        self.asked.append(promql)
        return self.prometheus_now


async def test_a_stale_hold_names_an_operator_clock_ahead_of_prometheus() -> None:
    """The operator's clock is 120 s ahead of Prometheus': fresh samples look two minutes old.
    The pass asks Prometheus' time() once (not per variant) and the hold says the clocks are
    apart; a pass on fresh metrics asks nothing."""
    now = 1_000_000.0
    theirs = now - 120
    reader = ClockedReader(
        {"m-small": _metrics(10.0, theirs - 2), "m-large": _metrics(1.0, theirs - 2)}, theirs
    )
    planner = _planner(reader)
    outcome = await planner.plan("ns", "pool", _spec(), None, {"small": 1, "large": 1}, HELD, now=now)
    assert outcome.metrics is not None and outcome.metrics.reason == "MetricsUnavailable"
    assert "the operator's clock is ~120s ahead of Prometheus'" in outcome.metrics.message
    assert reader.asked == ["time()"]
    reader.by_model = {"m-small": _metrics(10.0, now + 20), "m-large": _metrics(1.0, now + 20)}
    reader.asked.clear()
    fresh = await planner.plan("ns", "pool", _spec(), None, {"small": 1, "large": 1}, HELD, now=now + 20)
    assert fresh.metrics is not None and fresh.metrics.reason == "MetricsFresh"
    assert reader.asked == []
