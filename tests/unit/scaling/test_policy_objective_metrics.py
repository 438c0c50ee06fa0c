"""modelpool_routingpolicy_max_large_share_ratio: one series per RoutingPolicy that caps the large
tier's share (spec.objectives.maxLargeSharePercent / 100), labelled with the pool the policy routes
to; changed with the cap, moved with the pool, removed with the cap and with a deleted policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

from modelpool.api.routingpolicy import RoutingPolicyStatus
from modelpool.controllers import handlers
from modelpool.scaling.metrics import REGISTRY, forget_policy_objectives, record_policy_objectives

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
    """A daemon's stop flag that never stops (the loop ends when the pass finds the policy gone)."""

    reason = None

    def __bool__(self) -> bool:
        return False


class _Logger:
    def info(self, *args: object) -> None: ...
    def warning(self, *args: object) -> None: ...
    def error(self, *args: object) -> None: ...
    def exception(self, *args: object) -> None: ...
    def log(self, *args: object) -> None: ...


async def test_the_policy_daemon_exports_the_cap_of_its_spec_and_drops_it(monkeypatch: Any) -> None:
    """run_policy, after each pass, exports the cap of the policy's (live) spec; a cap removed from
    the spec, a spec that no longer validates and a policy gone remove the series."""
    ns, name = "obj-daemon", "policy"
    spec: dict[str, Any] = {
        "poolRef": {"name": "intents"},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
        "objectives": {"maxLargeSharePercent": 25},
    }
    body: dict[str, Any] = {"metadata": {"namespace": ns, "name": name}, "spec": spec}
    seen: list[float | None] = []
    edits: list[Callable[[], object]] = [
        lambda: None,
        lambda: spec["objectives"].update(maxLargeSharePercent=40),
        lambda: spec["objectives"].pop("maxLargeSharePercent"),
        lambda: spec["objectives"].update(maxLargeSharePercent=10),
        lambda: spec.update(mode="nonsense"),  # invalid: not Accepted, so no cap
        lambda: spec.update(mode="weighted"),
    ]

    async def reconcile(*_: object) -> RoutingPolicyStatus | None:
        seen.append(_cap(ns, name, "intents"))  # what the pass before exported
        if not edits:
            return None  # the policy is gone
        edits.pop(0)()
        handlers.POLICY_TRIGGERS.poke(ns, name)  # the next pass at once
        return RoutingPolicyStatus()

    monkeypatch.setattr(handlers, "reconcile_policy", reconcile)
    run_policy: Any = handlers.run_policy  # the daemon as kopf calls it (kwargs only)
    await run_policy(
        namespace=ns,
        name=name,
        body=body,
        memo={"kube": None, "http": None},
        logger=_Logger(),
        stopped=_Stopped(),
    )
    # each pass sees what the one before exported: nothing yet, 25, 40, none (removed), 10,
    # none (invalid), 10 (valid again)
    assert seen == [None, 0.25, 0.4, None, 0.1, None, 0.1]
    assert _lines(ns) == []  # the pass that found the policy gone removed it
