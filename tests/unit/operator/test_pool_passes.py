"""Whole reconcile passes of a pool against a fake API server: a retried pass does not undo the
decision the failed one applied, a child whose variant label was edited is corrected and kept,
and ProfilesCurrent goes when no variant references a profile any more."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, cast

import pytest

from modelpool.api import conditions as c
from modelpool.api.base import Condition
from modelpool.builders.triton import LABEL_VARIANT
from modelpool.controllers import scaling_planner
from modelpool.controllers.pool_reconciler import pool_path, reconcile_pool
from modelpool.controllers.scaling_planner import ScalingPlanner
from modelpool.kube import KubeClient, KubeError, Obj, resource_path
from modelpool.scaling.prometheus_reader import VariantTarget
from modelpool.scaling.types import RatePoint, VariantMetrics
from unit.operator.test_disruption_budgets import DEPLOYMENTS, NS, PDBS, POOL, SERVICES, UID, FakeKube

Event = tuple[str, str, str]


def _pool(**spec: Any) -> Obj:
    variant = {"name": "small", "tier": "small", "model": {"name": "small", "repository": "/m"}}
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"gpuPool": {"gpuBudget": 8}, "variants": [variant], **spec},
    }


async def _pass(kube: FakeKube, events: list[Event], planner: ScalingPlanner | None = None) -> None:
    await reconcile_pool(cast(KubeClient, kube), NS, POOL, lambda *e: events.append(e), planner=planner)


class BusyReader:
    """Prometheus showing 600 req/s for a variant of 50 req/s per replica."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    async def read_variant(self, target: VariantTarget, at: float | None = None) -> VariantMetrics:
        t = self.clock[0]
        return VariantMetrics(
            rate_series=tuple(RatePoint(t - 16 + 2 * i, 600.0) for i in range(9)),
            queue_time_s=0.2,
            compute_time_s=0.02,
            pending_requests=40.0,
            newest_sample_t=t - 1,
            rate_window_s=4.0,
        )


class RefusingStatusKube(FakeKube):
    """Refuses the next ``refusals`` status writes (as the API server refuses an invalid status)."""

    refusals = 0

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        if self.refusals:
            self.refusals -= 1
            raise KubeError(422, "Invalid", "status.variants[0].reason: Too long")
        return await super().merge_patch(path, body)


async def test_a_pass_retried_within_the_decision_interval_keeps_the_replicas_it_decided(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass decided 1 -> 12 replicas and applied them, then failed writing the status; the pass
    retried 5 s later (within intervalSeconds, so no new decision) took the plan from the stored
    status and applied 1 again, and the next decision 12: the Deployment flapped 12 -> 1 -> 12."""
    clock = [1_000.0]
    monkeypatch.setattr(scaling_planner, "time", SimpleNamespace(time=lambda: clock[0]))
    spec = {
        "scaling": {"prometheusURL": "http://prometheus.invalid", "intervalSeconds": 15},
        "disruptionBudget": {"enabled": False},
    }
    pool = _pool(**spec)
    pool["spec"]["variants"][0].update(maxReplicas=20, scaling={"capacityPerReplicaRps": 50})
    kube = RefusingStatusKube({pool_path(NS, POOL): pool})
    planner = ScalingPlanner(default_prometheus_url=None)
    planner.reader = lambda *_a, **_k: BusyReader(clock)  # type: ignore[method-assign,assignment,return-value]
    events: list[Event] = []
    deployment = f"{DEPLOYMENTS}/{POOL}-small"

    kube.refusals = 1
    with pytest.raises(KubeError):
        await _pass(kube, events, planner)
    decided = kube.objects[deployment]["spec"]["replicas"]
    assert decided > 1
    clock[0] += 5
    await _pass(kube, events, planner)  # the retry: no decision due
    assert kube.objects[deployment]["spec"]["replicas"] == decided
    status = kube.objects[pool_path(NS, POOL)]["status"]
    assert status["variants"][0]["desiredReplicas"] == decided


@pytest.mark.parametrize("label", [None, "gone", ""])
async def test_a_child_whose_variant_label_was_edited_is_corrected_not_deleted(label: str | None) -> None:
    """The pass restored the label, then pruned the child by the label it had listed before the pass
    (None: 'variant None left the spec') and deleted the Deployment, Service and budget of a
    variant still in the spec, to recreate them on the next pass."""
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    events: list[Event] = []
    await _pass(kube, events)
    children = [f"{DEPLOYMENTS}/{POOL}-small", f"{SERVICES}/{POOL}-small", f"{PDBS}/{POOL}-small"]
    for path in children:
        labels = kube.objects[path]["metadata"]["labels"]
        if label is None:
            del labels[LABEL_VARIANT]
        else:
            labels[LABEL_VARIANT] = label
    before = copy.deepcopy(kube.objects)
    events.clear()
    await _pass(kube, events)
    assert [r for r in kube.requests if r[0] == "delete"] == []
    assert [e for e in events if e[1] == "Deleted"] == []
    for path in children:
        assert kube.objects[path]["metadata"]["uid"] == before[path]["metadata"]["uid"]
        assert kube.objects[path]["metadata"]["labels"][LABEL_VARIANT] == "small", path


async def test_children_of_a_variant_that_left_the_spec_are_still_deleted() -> None:
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    events: list[Event] = []
    pool = kube.objects[pool_path(NS, POOL)]
    pool["spec"]["variants"].append(
        {"name": "big", "tier": "large", "model": {"name": "b", "repository": "/m"}}
    )
    await _pass(kube, events)
    assert f"{DEPLOYMENTS}/{POOL}-big" in kube.objects
    pool["spec"]["variants"].pop()
    pool["metadata"]["generation"] += 1
    await _pass(kube, events)
    gone = {f"{kind}/{POOL}-big" for kind in (DEPLOYMENTS, SERVICES, PDBS)}
    assert not gone & set(kube.objects)
    assert f"{DEPLOYMENTS}/{POOL}-small" in kube.objects


async def test_profiles_current_goes_when_no_variant_references_a_profile() -> None:
    """ProfilesCurrent stayed (ProfileMissing, naming a ConfigMap nobody references) forever after
    the last profile reference was removed from the spec."""
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    pool = kube.objects[pool_path(NS, POOL)]
    pool["spec"]["variants"][0]["profile"] = {"configMapKeyRef": {"name": "profiles", "key": "small.yaml"}}
    events: list[Event] = []
    await _pass(kube, events)
    missing = c.find(_conditions(kube), c.PROFILES_CURRENT)
    assert missing is not None and missing.reason == "ProfileMissing"
    del pool["spec"]["variants"][0]["profile"]
    pool["metadata"]["generation"] += 1
    await _pass(kube, events)
    assert c.find(_conditions(kube), c.PROFILES_CURRENT) is None
    assert c.is_true(_conditions(kube), c.ACCEPTED)


def _conditions(kube: FakeKube) -> list[Condition]:
    return [Condition.model_validate(x) for x in kube.objects[pool_path(NS, POOL)]["status"]["conditions"]]


class RefusingServicesKube(FakeKube):
    """Refuses every apply of a Service while ``refusing`` (as an admission webhook would)."""

    refusing = True

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        if self.refusing and path.startswith(SERVICES):
            raise KubeError(422, "Invalid", "denied by policy-webhook")
        return await super().apply(path, body, force=force)


def _failing_pod(waiting: str, restarts: int) -> Obj:
    labels = {"modelpool.dev/pool": POOL, "app.kubernetes.io/managed-by": "modelpool", LABEL_VARIANT: "small"}
    terminated = {"reason": "Error", "exitCode": 1, "message": "error: creating server"}
    container = {
        "name": "triton",
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": waiting}},
        "lastState": {"terminated": terminated},
    }
    return {
        "metadata": {"name": f"{POOL}-small-0", "labels": labels},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "containerStatuses": [container]},
    }


async def test_failing_containers_get_their_event_while_a_refused_child_leads_degraded() -> None:
    """A refused child (ChildRejected) is Degraded's reason; crashing containers at the same time
    were only named in its message and got no Event of their own. They get one per change of
    failure, not one per pass, whichever reason leads (and none again when the conflict goes)."""
    kube = RefusingServicesKube({pool_path(NS, POOL): _pool()})
    pod = f"{resource_path('v1', 'pods', NS)}/{POOL}-small-0"
    events: list[Event] = []

    def failures() -> list[str]:
        return [e[1] for e in events if e[1] in ("ContainersCrashing", "ImagePullFailed")]

    kube.objects[pod] = _failing_pod("CrashLoopBackOff", 3)
    await _pass(kube, events)
    assert failures() == ["ContainersCrashing"]
    degraded = c.find(_conditions(kube), c.DEGRADED)
    assert degraded is not None and degraded.reason == "ChildRejected"
    assert "; ContainersCrashing: 1 pod(s) failing: small: pod bank-small-0" in degraded.message
    crash = next(e for e in events if e[1] == "ContainersCrashing")
    assert crash[0] == "Warning" and crash[2].startswith("1 pod(s) failing: small: pod bank-small-0")

    kube.objects[pod] = _failing_pod("CrashLoopBackOff", 4)  # one more restart: the same failure
    await _pass(kube, events)
    assert failures() == ["ContainersCrashing"]

    kube.objects[pod] = _failing_pod("ImagePullBackOff", 4)  # another kind of failure
    await _pass(kube, events)
    await _pass(kube, events)
    assert failures() == ["ContainersCrashing", "ImagePullFailed"]

    kube.refusing = False  # the conflict goes: the failure leads Degraded, already reported
    await _pass(kube, events)
    degraded = c.find(_conditions(kube), c.DEGRADED)
    assert degraded is not None and degraded.reason == "ImagePullFailed"
    kube.refusing = True  # and comes back
    await _pass(kube, events)
    assert failures() == ["ContainersCrashing", "ImagePullFailed"]
