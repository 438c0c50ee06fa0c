"""Whole reconcile passes of a pool when something goes wrong below it, against a fake API server:
a profile that is not YAML, a delete the operator may not make, pods the ReplicaSet cannot create or
a rollout past its deadline, a child write refused once, a variant renamed, and a surge pod that
finds no free GPUs. Each is reported in the pool's status and the pass goes on."""

from __future__ import annotations

from typing import Any, cast

import pytest

from modelpool.api import conditions as c
from modelpool.controllers.pool_reconciler import pool_path, reconcile_pool
from modelpool.controllers.pool_status import ChildIssues, ReplicaPlan, compute_status
from modelpool.kube import KubeClient, KubeError, Obj, resource_path
from unit.operator.test_disruption_budgets import (
    DEPLOYMENTS,
    NS,
    PDBS,
    POOL,
    SERVICES,
    UID,
    FakeKube,
    _variant,
)

Event = tuple[str, str, str]
QUOTA = (
    'pods "bank-small-5d9c7-x" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1, '
    "used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8"
)
NOW = "2026-01-01T00:00:00Z"


def _pool(*variants: Obj) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"gpuPool": {"gpuBudget": 8}, "variants": list(variants or [_variant("small")])},
    }


async def _pass(kube: FakeKube, events: list[Event]) -> None:
    await reconcile_pool(cast(KubeClient, kube), NS, POOL, lambda *e: events.append(e))


def _conditions(kube: FakeKube) -> dict[str, Obj]:
    return {cond["type"]: cond for cond in kube.objects[pool_path(NS, POOL)]["status"]["conditions"]}


def _edit(kube: FakeKube, *variants: Obj) -> None:
    pool = kube.objects[pool_path(NS, POOL)]
    pool["spec"]["variants"] = list(variants)
    pool["metadata"]["generation"] += 1


def _warnings(events: list[Event]) -> list[str]:
    return [reason for kind, reason, _ in events if kind == "Warning"]


async def test_a_profile_that_is_not_yaml_is_reported_and_the_pool_reconciled() -> None:
    """yaml.YAMLError is no ValueError: it failed every pass (no child, no status)."""
    variant = _variant("small", profile={"configMapKeyRef": {"name": "profiles", "key": "small"}})
    cm = {"metadata": {"name": "profiles", "namespace": NS}, "data": {"small": "model: [unclosed"}}
    kube = FakeKube(
        {pool_path(NS, POOL): _pool(variant), resource_path("v1", "configmaps", NS, "profiles"): cm}
    )
    await _pass(kube, [])
    assert f"{DEPLOYMENTS}/{POOL}-small" in kube.objects
    profiles = _conditions(kube)["ProfilesCurrent"]
    assert (profiles["status"], profiles["reason"]) == ("False", "ProfileMissing")
    assert "small: ConfigMap profiles key small is not a profile: not valid YAML" in profiles["message"]
    assert "line 1, column" in profiles["message"] and "\n" not in profiles["message"]


class NoDelete(FakeKube):
    """Refuses to delete Deployments and Services with ``error`` (by default, a 403)."""

    error: KubeError | None = None

    async def delete(self, path: str) -> None:
        if "/deployments/" in path or "/services/" in path:
            self._check("delete", path)
            resource = "deployments.apps" if "/deployments/" in path else "services"
            raise self.error or KubeError(403, "Forbidden", f'{resource} "x" is forbidden: cannot delete')
        await super().delete(path)


async def test_a_refused_delete_of_a_removed_variant_is_reported_and_the_pass_goes_on() -> None:
    """`delete` is a non-essential permission: a 403 on it failed every pass (no status written,
    the budgets after the prune never reconciled). The children stay, Degraded names each and the
    permission, one Warning Event per child, not one per pass."""
    kube = NoDelete({pool_path(NS, POOL): _pool(_variant("small"), _variant("large"))})
    events: list[Event] = []
    await _pass(kube, events)
    _edit(kube, _variant("small"))
    await _pass(kube, events)
    status = kube.objects[pool_path(NS, POOL)]["status"]
    assert status["observedGeneration"] == 2
    assert f"{DEPLOYMENTS}/{POOL}-large" in kube.objects and f"{SERVICES}/{POOL}-large" in kube.objects
    assert f"{PDBS}/{POOL}-large" not in kube.objects  # the budgets are reconciled after the prune
    degraded = _conditions(kube)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "PruneFailed")
    assert "Deployment bank-large stays although variant large left the spec" in degraded["message"]
    assert "grant the operator `delete deployments.apps`" in degraded["message"]
    assert "grant the operator `delete services`" in degraded["message"]
    assert _warnings(events) == ["PruneFailed", "PruneFailed"]
    events.clear()
    await _pass(kube, events)
    assert events == []


@pytest.mark.parametrize(
    "error",
    [
        KubeError(503, "ServiceUnavailable", "the request has been made before all known HTTP paths"),
        KubeError(403, "Forbidden", "namespace ns is being terminated", ("NamespaceTerminating",)),
    ],
)
async def test_a_busy_api_server_or_a_terminating_namespace_is_no_refused_delete(error: KubeError) -> None:
    """The pass is retried (or ends with its namespace), as for any other request."""
    kube = NoDelete({pool_path(NS, POOL): _pool(_variant("small"), _variant("large"))})
    await _pass(kube, [])
    _edit(kube, _variant("small"))
    kube.error = error
    with pytest.raises(KubeError):
        await _pass(kube, [])


def _failing(kube: FakeKube, *conditions: Obj, replicas: int = 0) -> None:
    dep = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]
    dep["metadata"]["generation"] = 1
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "unavailableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            *conditions,
        ],
    }


async def test_pods_the_replicaset_cannot_create_are_degraded() -> None:
    """A ResourceQuota, PodSecurity admission or a LimitRange refuses the pods: only the Deployment's
    ReplicaFailure condition says so, and the pool said "no problems observed"."""
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    events: list[Event] = []
    await _pass(kube, events)
    _failing(kube, {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": QUOTA})
    events.clear()
    await _pass(kube, events)
    conds = _conditions(kube)
    degraded = conds["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ReplicaFailure")
    assert QUOTA in degraded["message"] and "a ResourceQuota" in degraded["message"]
    budget = conds["GPUBudgetFits"]
    assert (budget["status"], budget["reason"]) == ("False", "GPUQuotaExceeded")
    assert "ResourceQuota" in budget["message"] and "requests.nvidia.com/gpu=8" in budget["message"]
    assert "small 0/1 (pods cannot be created: Degraded)" in conds["Ready"]["message"]
    assert _warnings(events) == ["ReplicaFailure"]
    events.clear()
    await _pass(kube, events)
    assert events == []


async def test_a_pod_security_refusal_points_at_the_namespace_level() -> None:
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    await _pass(kube, [])
    refusal = (
        'pods "bank-small-x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'
    )
    _failing(kube, {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refusal})
    await _pass(kube, [])
    conds = _conditions(kube)
    assert conds["Degraded"]["reason"] == "ReplicaFailure"
    assert "pod-security.kubernetes.io/enforce" in conds["Degraded"]["message"]
    assert conds["GPUBudgetFits"]["reason"] == "Fits"


async def test_a_pod_security_refusal_names_the_variants_security_context() -> None:
    """The fix the README and the runbook give for a namespace that enforces ``restricted`` is the
    variant's ``triton.securityContext``: the message named only the namespace's level, which the
    pool's owner may not be the one to change."""
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    await _pass(kube, [])
    refusal = (
        'pods "bank-small-x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'
    )
    _failing(kube, {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refusal})
    await _pass(kube, [])
    message = _conditions(kube)["Degraded"]["message"]
    assert "set spec.variants[].triton.securityContext of variant small" in message, message
    assert "runAsNonRoot: true with a non-root runAsUser, e.g. 1000" in message, message


async def test_a_rollout_past_its_progress_deadline_is_degraded() -> None:
    kube = FakeKube({pool_path(NS, POOL): _pool()})
    events: list[Event] = []
    await _pass(kube, events)
    message = 'ReplicaSet "bank-small-5d9c7" has timed out progressing.'
    stalled = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": message,
    }
    _failing(kube, stalled)
    events.clear()
    await _pass(kube, events)
    degraded = _conditions(kube)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert message in degraded["message"] and "progressDeadlineSeconds" in degraded["message"]
    assert _warnings(events) == ["ProgressDeadlineExceeded"]


def test_a_stalled_rollout_comes_after_what_stalled_it() -> None:
    """Crashing containers or unschedulable pods are why a rollout stalls: they lead Degraded."""
    spec = _spec_of(_variant("small"))
    dep = {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    pending = {
        "metadata": {"name": "bank-small-1", "labels": {"modelpool.dev/variant": "small"}},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "message": "0/1 nodes: 1 Insufficient cpu."}
            ],
        },
    }
    plans = {"small": ReplicaPlan(1, "min")}
    status = compute_status(spec, 1, plans, {"small": dep}, [pending], [], ChildIssues(), NOW)
    degraded = c.find(status.conditions, c.DEGRADED)
    assert degraded is not None and degraded.reason == "PodsUnschedulable"
    assert "; ProgressDeadlineExceeded: variant small" in degraded.message


class Flaky(FakeKube):
    """Answers the next write to a collection in ``refuse`` with ``error``."""

    refuse: tuple[str, ...] = ()
    error = KubeError(500, "InternalError", "etcdserver: request timed out")

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        if any(f"/{plural}/" in path for plural in self.refuse):
            self.refuse = ()
            self._check("patch", path)
            raise self.error
        return await super().apply(path, body, force=force)


def _serving(kube: FakeKube, ready: int) -> None:
    dep = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]
    dep["metadata"]["generation"] = 1
    dep["status"] = {
        "observedGeneration": 1,
        "readyReplicas": ready,
        "replicas": ready,
        "updatedReplicas": ready,
    }


async def test_a_refused_deployment_write_reports_the_replicas_that_serve() -> None:
    """A 500 on a child write took the Deployment as absent: readyReplicas 0, Ready 'small 0/3' and
    Degraded=ChildConflict while 3 replicas served."""
    kube = Flaky({pool_path(NS, POOL): _pool(_variant("small", minReplicas=3))})
    events: list[Event] = []
    await _pass(kube, events)
    _serving(kube, 3)
    _edit(kube, _variant("small", minReplicas=3, triton={"image": "nvcr.io/nvidia/tritonserver:24.09-py3"}))
    kube.refuse = ("deployments",)
    events.clear()
    await _pass(kube, events)
    status = kube.objects[pool_path(NS, POOL)]["status"]
    assert status["variants"][0]["readyReplicas"] == 3
    degraded = _conditions(kube)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildRejected")
    assert (
        "Deployment bank-small" in degraded["message"]
        and "etcdserver: request timed out" in degraded["message"]
    )
    assert "small 0/3" not in _conditions(kube)["Ready"]["message"]
    assert _warnings(events) == ["ChildRejected"]
    await _pass(kube, events)  # the next pass writes it
    assert kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] == ("nvcr.io/nvidia/tritonserver:24.09-py3")
    assert _conditions(kube)["Degraded"]["status"] == "False"


async def test_a_refused_service_does_not_keep_the_deployment_from_scaling() -> None:
    kube = Flaky({pool_path(NS, POOL): _pool(_variant("small", minReplicas=1))})
    await _pass(kube, [])
    _edit(kube, _variant("small", minReplicas=2))
    del kube.objects[f"{SERVICES}/{POOL}-small"]["spec"]["ports"]  # drifted: the pass applies it
    kube.refuse = ("services",)
    kube.error = KubeError(422, "Invalid", 'Service "bank-small" is invalid: spec.ports: Required value')
    await _pass(kube, [])
    assert kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]["spec"]["replicas"] == 2
    degraded = _conditions(kube)["Degraded"]
    assert degraded["reason"] == "ChildRejected" and "Service bank-small" in degraded["message"]


async def test_a_removed_variant_says_how_many_ready_replicas_went() -> None:
    """Renaming a variant deletes the old one's children in the pass that creates the new one's (a
    retiring mechanism would hold GPUs outside the budget): the docs give the safe order, and the
    Event says what was lost."""
    kube = FakeKube({pool_path(NS, POOL): _pool(_variant("small", minReplicas=3))})
    events: list[Event] = []
    await _pass(kube, events)
    _serving(kube, 3)
    _edit(kube, _variant("tiny", minReplicas=1, maxReplicas=4))
    events.clear()
    await _pass(kube, events)
    assert f"{DEPLOYMENTS}/{POOL}-small" not in kube.objects
    deleted = [message for _, reason, message in events if reason == "Deleted" and "Deployment" in message]
    assert deleted == [
        "deleted Deployment bank-small: variant small left the spec; its 3 ready replica(s) no longer serve "
        "(to replace a variant without a gap, add the new one, wait for Ready, then remove the old one)"
    ]


def _spec_of(*variants: Obj) -> Any:
    from modelpool.api.modelpool import ModelPoolSpec

    return ModelPoolSpec.model_validate({"gpuPool": {"gpuBudget": 3}, "variants": list(variants)})


@pytest.mark.parametrize("rolling", [True, False])
def test_a_surge_pod_without_gpus_says_the_rollout_needs_one_replicas_gpus(rolling: bool) -> None:
    """maxSurge 1, maxUnavailable 0 on an exactly full GPU cluster: the surge pod stays Pending."""
    spec = _spec_of(_variant("small", minReplicas=3, gpusPerReplica=1))
    old = {"replicas": 4, "updatedReplicas": 1} if rolling else {"replicas": 4, "updatedReplicas": 4}
    dep = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "readyReplicas": 3, **old}}
    pending = {
        "metadata": {"name": "bank-small-new", "labels": {"modelpool.dev/variant": "small"}},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/3 nodes: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    status = compute_status(
        spec, 1, {"small": ReplicaPlan(3, "min")}, {"small": dep}, [pending], [], ChildIssues(), NOW
    )
    budget = c.find(status.conditions, c.GPU_BUDGET_FITS)
    assert budget is not None and budget.reason == "InsufficientNodeGPUs"
    hint = "a rollout of variant small is in progress: it surges one replica at a time"
    assert (hint in budget.message) is rolling
    if rolling:
        assert "1 nvidia.com/gpu free on one node" in budget.message
