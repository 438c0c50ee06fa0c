"""modelpool_routingpolicy_max_large_share_ratio: one series per RoutingPolicy that caps the large
tier's share (spec.objectives.maxLargeSharePercent / 100), labelled with the pool the policy routes
to; changed with the cap, moved with the pool, removed with the cap and with a deleted policy."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from modelpool.api.routingpolicy import RoutingPolicyStatus
from modelpool.controllers import handlers
from modelpool.scaling.metrics import REGISTRY, forget_policy_objectives, record_policy_objectives
from unit.operator.test_spec_edge_cases import _policy, _reconcile

METRIC = "modelpool_routingpolicy_max_large_share_ratio"


def _cap(namespace: str, name: str, pool: str) -> float | None:
    return REGISTRY.get_sample_value(METRIC, {"namespace": namespace, "name": name, "pool": pool})


def _lines(namespace: str) -> list[str]:
    text = generate_latest(REGISTRY).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(METRIC + "{") and f'namespace="{namespace}"' in line
    ]


def test_a_cap_is_exported_as_a_ratio() -> None:
    record_policy_objectives("obj-set", "policy", "intents", 20)
    assert _cap("obj-set", "policy", "intents") == 0.2
    assert len(_lines("obj-set")) == 1
    record_policy_objectives("obj-set", "zero", "intents", 0)
    record_policy_objectives("obj-set", "full", "intents", 100)
    assert _cap("obj-set", "zero", "intents") == 0.0
    assert _cap("obj-set", "full", "intents") == 1.0


def test_a_changed_cap_changes_the_value() -> None:
    record_policy_objectives("obj-change", "policy", "intents", 20)
    record_policy_objectives("obj-change", "policy", "intents", 35)
    assert _cap("obj-change", "policy", "intents") == 0.35
    assert len(_lines("obj-change")) == 1


def test_a_policy_without_a_cap_has_no_series() -> None:
    record_policy_objectives("obj-none", "policy", "intents", None)
    assert _lines("obj-none") == []


def test_a_removed_cap_removes_the_series() -> None:
    record_policy_objectives("obj-removed", "policy", "intents", 20)
    record_policy_objectives("obj-removed", "policy", "intents", None)
    assert _cap("obj-removed", "policy", "intents") is None
    assert _lines("obj-removed") == []
    record_policy_objectives("obj-removed", "policy", "intents", 30)  # set again
    assert _cap("obj-removed", "policy", "intents") == 0.3


def test_a_policy_routed_to_another_pool_moves_its_series() -> None:
    record_policy_objectives("obj-move", "policy", "old-pool", 20)
    record_policy_objectives("obj-move", "policy", "new-pool", 20)
    assert _cap("obj-move", "policy", "old-pool") is None
    assert _cap("obj-move", "policy", "new-pool") == 0.2
    assert len(_lines("obj-move")) == 1


def test_a_deleted_policy_leaves_no_series_and_the_others_keep_theirs() -> None:
    record_policy_objectives("obj-del", "gone", "intents", 20)
    record_policy_objectives("obj-del", "kept", "intents", 40)
    record_policy_objectives("obj-del-2", "gone", "intents", 50)  # same name, another namespace
    forget_policy_objectives("obj-del", "gone")
    assert _cap("obj-del", "gone", "intents") is None
    assert _cap("obj-del", "kept", "intents") == 0.4
    assert _cap("obj-del-2", "gone", "intents") == 0.5
    forget_policy_objectives("obj-del", "gone")  # twice: no error
    forget_policy_objectives("obj-del", "never-recorded")
    forget_policy_objectives("obj-del", "kept")
    forget_policy_objectives("obj-del-2", "gone")
    assert _lines("obj-del") == [] and _lines("obj-del-2") == []


class _Stopped:
    """A daemon's stop flag that kopf sets once ``passes`` has ``after`` entries (a pass that finds
    the policy gone does not end the loop by itself: kopf stops the daemon of a deleted policy)."""

    reason = None

    def __init__(self, passes: list[int], after: int) -> None:
        self.passes, self.after = passes, after

    def __bool__(self) -> bool:
        return len(self.passes) >= self.after


class _Logger:
    def info(self, *args: object) -> None: ...
    def warning(self, *args: object) -> None: ...
    def error(self, *args: object) -> None: ...
    def exception(self, *args: object) -> None: ...
    def log(self, *args: object) -> None: ...


def test_each_policy_pass_exports_the_cap_of_the_spec_it_read() -> None:
    """The real reconcile_policy, on the spec it reads from the API server (a fake one here): the
    cap, changed, removed from the spec, and gone with a spec that does not validate (not
    Accepted), then back."""
    exported = []
    for policy in (
        _policy(objectives={"maxLargeSharePercent": 25}),
        _policy(objectives={"maxLargeSharePercent": 40}),
        _policy(),
        _policy(objectives={"maxLargeSharePercent": 10}, mode="nonsense"),
        _policy(objectives={"maxLargeSharePercent": 10}),
    ):
        _reconcile("capped", policy)
        exported.append(_cap("ns", "capped", "bank"))
    assert exported == [0.25, 0.4, None, None, 0.1]
    forget_policy_objectives("ns", "capped")


async def test_the_policy_daemon_drops_the_cap_when_a_pass_finds_the_policy_gone(monkeypatch: Any) -> None:
    ns, name = "obj-daemon", "policy"
    passes: list[int] = []

    async def reconcile(*_: object) -> RoutingPolicyStatus | None:
        passes.append(1)
        if len(passes) == 1:
            record_policy_objectives(ns, name, "intents", 25)  # what a pass over a capped spec does
            handlers.POLICY_TRIGGERS.poke(ns, name)  # the next pass at once
            return RoutingPolicyStatus()
        assert _cap(ns, name, "intents") == 0.25
        return None  # the policy is gone

    monkeypatch.setattr(handlers, "reconcile_policy", reconcile)
    run_policy: Any = handlers.run_policy  # the daemon as kopf calls it (kwargs only)
    await run_policy(
        namespace=ns,
        name=name,
        body={"metadata": {"namespace": ns, "name": name}, "spec": {}},
        memo={"kube": None, "http": None},
        logger=_Logger(),
        stopped=_Stopped(passes, after=2),
    )
    assert len(passes) == 2 and _lines(ns) == []
