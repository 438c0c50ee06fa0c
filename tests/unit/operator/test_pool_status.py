"""Status computation from live children: conditions, GPUs, budget."""

from __future__ import annotations

from typing import Any

from modelpool.api import conditions as c
from modelpool.api.base import shorten
from modelpool.api.modelpool import ModelPoolSpec, ScalerMemory
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.api.semantics import child_name_problems, routing_reference_problems
from modelpool.controllers.pool_reconciler import hold_or_minimum
from modelpool.controllers.pool_status import (
    ChildIssues,
    ReplicaPlan,
    SharedGpuPool,
    compute_status,
    status_write_due,
)

NOW = "2026-01-01T00:00:00Z"
MARK = " \u2026 ("


def _spec(budget: int = 8, small_min: int = 1) -> ModelPoolSpec:
    return ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": budget},
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "model": {"name": "s", "repository": "/m"},
                    "minReplicas": small_min,
                },
                {
                    "name": "large",
                    "tier": "large",
                    "model": {"name": "l", "repository": "/m"},
                    "gpusPerReplica": 2,
                },
            ],
        }
    )


def _pod(variant: str, name: str, node: str | None, unschedulable: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if node else "Pending"}
    if unschedulable:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        ]
    return {
        "metadata": {"name": name, "labels": {"modelpool.dev/variant": variant}},
        "spec": {"nodeName": node} if node else {},
        "status": status,
    }


def _dep(ready: int, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "status": {"readyReplicas": ready, "updatedReplicas": replicas, "observedGeneration": 1},
    }


def _plans(small: int = 1, large: int = 1) -> dict[str, ReplicaPlan]:
    return {"small": ReplicaPlan(small, "min"), "large": ReplicaPlan(large, "min")}


def test_all_ready() -> None:
    pods = [_pod("small", "s-1", "n1"), _pod("large", "l-1", "n2")]
    status = compute_status(
        _spec(), 3, _plans(), {"small": _dep(1, 1), "large": _dep(1, 1)}, pods, [], ChildIssues(), NOW
    )
    assert status.observed_generation == 3
    assert status.gpus_in_use == 3
    assert status.gpus_requested == 3
    assert c.is_true(status.conditions, c.READY)
    assert c.is_true(status.conditions, c.GPU_BUDGET_FITS)
    assert not c.is_true(status.conditions, c.PROGRESSING)
    assert not c.is_true(status.conditions, c.DEGRADED)
    assert all(cond.observed_generation == 3 for cond in status.conditions)


def test_unschedulable_gpu_pods_flag_the_budget_condition() -> None:
    msg = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    pods = [_pod("small", "s-1", "n1"), _pod("large", "l-1", None, unschedulable=msg)]
    status = compute_status(
        _spec(), 1, _plans(), {"small": _dep(1, 1), "large": _dep(0, 1)}, pods, [], ChildIssues(), NOW
    )
    budget = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.status == "False" and budget.reason == "InsufficientNodeGPUs"
    assert "Insufficient nvidia.com/gpu" in budget.message
    assert c.find(status.conditions, c.DEGRADED).reason == "PodsUnschedulable"  # type: ignore[union-attr]
    assert not c.is_true(status.conditions, c.READY)
    assert status.gpus_in_use == 1


def test_minimums_over_budget() -> None:
    status = compute_status(_spec(budget=2, small_min=1), 1, _plans(), {}, [], [], ChildIssues(), NOW)
    budget = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.reason == "MinReplicasExceedBudget"
    assert "need 3 GPUs" in budget.message and "gpuBudget is 2" in budget.message


def test_budget_condition_names_a_shared_gpu_pool() -> None:
    own = c.find(
        compute_status(_spec(), 1, _plans(), {}, [], [], ChildIssues(), NOW).conditions, c.GPU_BUDGET_FITS
    )
    assert own is not None and own.message == "3 of 8 GPUs requested"
    wire = _spec().to_wire()
    wire["gpuPool"]["name"] = "a100"
    shared = ModelPoolSpec.model_validate(wire)
    status = compute_status(shared, 1, _plans(), {}, [], [], ChildIssues(), NOW)
    budget = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.reason == "Fits"
    assert budget.message.startswith("3 of 8 GPUs shared in GPU pool 'a100'")
    # The other members' minimums count too: 3 here + 6 there > the smallest budget declared (8).
    crowded = compute_status(shared, 1, _plans(), {}, [], [], ChildIssues(), NOW, SharedGpuPool(8, 6))
    budget = c.find(crowded.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.reason == "MinReplicasExceedBudget"
    assert "pools sharing GPU pool 'a100' need 9 GPUs" in budget.message
    declared_less = compute_status(shared, 1, _plans(), {}, [], [], ChildIssues(), NOW, SharedGpuPool(6, 0))
    budget = c.find(declared_less.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.reason == "Fits" and budget.message.startswith("3 of 6 GPUs")
    assert "declares gpuBudget 8, another pool on it less, and the smallest applies" in budget.message
    smaller = compute_status(shared, 1, _plans(), {}, [], [], ChildIssues(), NOW, SharedGpuPool(2, 0))
    assert c.find(smaller.conditions, c.GPU_BUDGET_FITS).reason == "MinReplicasExceedBudget"  # type: ignore[union-attr]


def test_conflict_is_degraded_and_not_ready() -> None:
    issues = ChildIssues(conflicts=["Deployment x exists and is not owned by this pool"])
    status = compute_status(
        _spec(), 1, _plans(), {"small": _dep(1, 1), "large": _dep(1, 1)}, [], [], issues, NOW
    )
    assert c.find(status.conditions, c.DEGRADED).reason == "ChildConflict"  # type: ignore[union-attr]
    assert not c.is_true(status.conditions, c.READY)


def test_planner_holds_last_decision_within_bounds() -> None:
    spec = _spec()
    first = hold_or_minimum(spec, None)
    assert first["small"].replicas == 1
    status = compute_status(
        spec,
        1,
        {"small": ReplicaPlan(3, "scaled up"), "large": ReplicaPlan(9, "x")},
        {},
        [],
        [],
        ChildIssues(),
        NOW,
    )
    held = hold_or_minimum(spec, status)
    assert held["small"] == ReplicaPlan(3, "scaled up")
    assert held["large"].replicas == 4  # maxReplicas
    assert "clamped" in held["large"].reason


def test_child_name_problems() -> None:
    spec = _spec()
    assert child_name_problems("bank", spec) == []
    long = child_name_problems("p" * 60, spec)
    assert long and long[0].reason == "ChildNameTooLong" and long[0].field == "spec.variants[0].name"
    digit = child_name_problems("9pool", spec)
    assert digit and digit[0].reason == "InvalidChildName"


def test_routing_reference_problems() -> None:
    spec = RoutingPolicySpec.model_validate(
        {
            "poolRef": {"name": "bank"},
            "mode": "cascade",
            "cascade": {"draft": "small", "verifier": "huge"},
            "routerSelector": {"matchLabels": {"a": "b"}},
        }
    )
    problems = routing_reference_problems(spec, ["small", "large"])
    assert [p.field for p in problems] == ["spec.cascade.verifier"]
    assert "huge" in problems[0].message and "large" in problems[0].message


def _decided(status: Any, at: float, reason: str, replicas: int = 1) -> Any:
    """``status`` as a decision at ``at`` with ``reason`` (and ``replicas`` for small) leaves it."""
    variants = [
        v.model_copy(
            update={
                "reason": reason if v.name == "small" else v.reason,
                "desired_replicas": replicas if v.name == "small" else v.desired_replicas,
                "scaler": ScalerMemory(decided_at=at, last_demand_rps=3.0),
            }
        )
        for v in status.variants
    ]
    return status.model_copy(update={"variants": variants})


def test_decisions_that_move_only_reasons_and_memory_are_written_every_ten_seconds() -> None:
    base = compute_status(
        _spec(), 1, _plans(), {"small": _dep(1, 1), "large": _dep(1, 1)}, [], [], ChildIssues(), NOW
    )
    stored = _decided(base, 100.0, "keep 1->1: demand 3.0 req/s").to_wire()
    assert not status_write_due(_decided(base, 100.0, "keep 1->1: demand 3.0 req/s"), stored)  # unchanged
    assert not status_write_due(_decided(base, 101.0, "keep 1->1: demand 3.5 req/s"), stored)
    assert not status_write_due(_decided(base, 109.5, "keep 1->1: demand 2.5 req/s"), stored)
    assert status_write_due(_decided(base, 110.0, "keep 1->1: demand 2.5 req/s"), stored)  # 10 s old
    assert status_write_due(_decided(base, 101.0, "scale up 1->2: demand 30 req/s", replicas=2), stored)
    assert status_write_due(_decided(base, 101.0, "keep"), None)  # nothing stored yet


def test_a_pod_the_spread_keeps_off_free_nodes_is_not_short_of_gpus() -> None:
    """Seen on the real scheduler (tests/integration/cluster/test_topology_spread.py): with
    DoNotSchedule, the nodes with room are refused for the spread and the others for their GPUs."""
    msg = (
        "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match pod topology "
        "spread constraints. preemption: 0/4 nodes are available: 4 No preemption victims found."
    )
    pods = [_pod("small", "s-1", "n1"), _pod("large", "l-1", None, unschedulable=msg)]
    status = compute_status(
        _spec(), 1, _plans(), {"small": _dep(1, 1), "large": _dep(0, 1)}, pods, [], ChildIssues(), NOW
    )
    budget = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.status == "True" and budget.reason == "Fits"
    degraded = c.find(status.conditions, c.DEGRADED)
    assert degraded is not None and degraded.reason == "PodsUnschedulable"
    assert "set spec.topologySpread.whenUnsatisfiable to ScheduleAnyway" in degraded.message


def test_shorten_keeps_the_start_and_says_how_much_was_cut() -> None:
    assert shorten("short", 1024) == "short"
    assert shorten("x" * 1024, 1024) == "x" * 1024
    for length in (1025, 1030, 5000, 10**6):
        text = "cause: " + "x" * (length - 7)
        cut = shorten(text, 1024)
        assert len(cut) == 1024, length
        assert cut.startswith("cause: x")
        kept = cut.index(MARK)
        assert cut.endswith(f"{MARK}{length - kept} more characters)"), cut[-40:]
    assert shorten("abcdef" * 10, 10) == "abcdefabcd"  # no room for the marker: a plain cut


def test_reasons_and_messages_too_long_for_their_fields_are_cut_not_refused() -> None:
    """A hold reason quoting Prometheus' series labels (1184 characters) made compute_status raise
    after the pass had applied the new replica count, so the pool's status was never written and
    the retried pass undid the decision. Reasons and messages are cut to their fields' limits
    (1024 characters, 32768 for a condition's message), keeping the start that names the cause."""
    long_reason = "holding 2 replicas: metrics missing: " + "{'pod': 'demo-small-7c9f8d6b5d'}, " * 40
    plans = {"small": ReplicaPlan(2, long_reason), "large": ReplicaPlan(1, "min")}
    pods = [_pod("small", f"s-{i}", None, "0/3 nodes are available: " + "n" * 40_000) for i in range(2)]
    status = compute_status(_spec(), 1, plans, {}, pods, [], ChildIssues(), NOW)
    reason = status.variants[0].reason
    assert len(long_reason) > 1024 and len(reason) == 1024
    assert reason.startswith("holding 2 replicas: metrics missing: ")
    kept = reason.index(MARK)
    assert reason.endswith(f"({len(long_reason) - kept} more characters)")
    degraded = c.find(status.conditions, c.DEGRADED)
    assert degraded is not None and degraded.reason == "PodsUnschedulable"
    assert len(degraded.message) == 32768 and degraded.message.startswith("2 pod(s) pending: s-0: ")
    assert degraded.message.endswith("more characters)")
    assert len(c.set_condition([], c.READY, "False", "R" * 2000, "m", 1, NOW)[0].reason) == 1024
