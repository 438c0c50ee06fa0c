"""The pool's Degraded reasons that come from the real control plane, not from a fake: pods the
ReplicaSet cannot create (``ReplicaFailure``: a real ResourceQuota, with ``GPUBudgetFits=False/
GPUQuotaExceeded`` when it limits the GPUs; PodSecurity admission or a pod-count quota without it),
a rollout past its ``progressDeadlineSeconds`` (``ProgressDeadlineExceeded``, from the real
Deployment controller) and a delete of a removed variant's Deployment that the real API server
refuses to an operator without that permission (``PruneFailed``). Each clears once its cause goes,
without a restart."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.cluster.chart_rbac import grant_chart_rbac
from integration.cluster.kubetools import Kube, wait_for
from integration.cluster.test_modelpool_operator import pool_manifest, ready
from integration.cluster.test_operator_misconfiguration import POOL, _operator_as_chart_sa
from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
QUOTA_HINT = (
    "a ResourceQuota of the namespace refuses the pods (kubectl describe resourcequota): raise it, "
    "or lower the pool's gpuBudget/maxReplicas to fit it"
)
POD_SECURITY_HINT = (
    "the namespace's PodSecurity admission (label pod-security.kubernetes.io/enforce) refuses the pod: "
    "set spec.variants[].triton.securityContext of variant small to what the level requires "
    "(restricted: runAsNonRoot: true with a non-root runAsUser, e.g. 1000"
)
RESTRICTED = "pod-security.kubernetes.io/enforce"


def _current(kube: Kube, pool: str, type_: str, status: str, reason: str) -> Obj | None:
    """The pool's condition ``type_`` when it has ``status`` and ``reason`` and the status describes
    the pool's current spec."""
    obj = kube.get("modelpool", pool) or {}
    observed = (obj.get("status") or {}).get("observedGeneration")
    cond = kube.condition("modelpool", pool, type_)
    if cond is None or observed != obj.get("metadata", {}).get("generation"):
        return None
    return cond if (cond["status"], cond["reason"]) == (status, reason) else None


def _warnings(kube: Kube, pool: str, reason: str) -> list[Obj]:
    return [e for e in kube.events(pool) if e["type"] == "Warning" and e["reason"] == reason]


def _quota(kube: Kube, name: str, hard: dict[str, str]) -> None:
    """A ResourceQuota, once kube-controller-manager counted its usage: until then the API server
    refuses pods with ``status unknown for quota``, not the refusal the tests are about."""
    kube.apply(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}
    )
    wait_for(
        lambda: ((kube.get("resourcequota", name) or {}).get("status") or {}).get("hard") == hard,
        30,
        f"ResourceQuota {name} counted",
    )


def _variant(name: str, gpus: int = 1) -> Obj:
    return {
        "name": name,
        "tier": name,
        "model": {"name": f"bank-{name}", "repository": "/models"},
        "gpusPerReplica": gpus,
    }


def _deployment_condition(kube: Kube, name: str, type_: str, reason: str) -> Obj | None:
    cond = kube.condition("deployment", name, type_)
    return cond if cond is not None and cond.get("reason") == reason else None


def test_a_gpu_quota_below_the_budget_is_replica_failure_and_gpu_quota_exceeded_until_raised(
    kube: Kube,
) -> None:
    """A ResourceQuota of 1 GPU: the small variant (1 GPU) runs, the large one's ReplicaSet (2 GPUs a
    pod) cannot create its pod, kube-controller-manager puts ReplicaFailure on its Deployment, and
    the pool names the variant, the quota's words and what to change. Raised to the budget, the
    ReplicaSet creates the pod and both conditions clear."""
    _quota(kube, "gpu", {"requests.nvidia.com/gpu": "1"})
    kube.apply(
        pool_manifest("bank", scaling={"enabled": False}, variants=[_variant("small"), _variant("large", 2)])
    )

    degraded = wait_for(
        lambda: _current(kube, "bank", "Degraded", "True", "ReplicaFailure"),
        90,
        "Degraded=True/ReplicaFailure",
    )
    failure = _deployment_condition(kube, "bank-large", "ReplicaFailure", "FailedCreate")
    assert failure is not None and failure["status"] == "True", failure
    refusal = failure["message"]  # the API server's words, as the ReplicaSet controller got them
    assert "exceeded quota: gpu" in refusal and "limited: requests.nvidia.com/gpu=1" in refusal, refusal
    message = degraded["message"]
    assert message.startswith(f"variant large: its ReplicaSet cannot create pods: {refusal}; "), message
    assert QUOTA_HINT in message and "variant small" not in message, message

    budget = kube.condition("modelpool", "bank", "GPUBudgetFits")
    assert budget is not None and (budget["status"], budget["reason"]) == ("False", "GPUQuotaExceeded"), (
        budget
    )
    assert budget["message"].startswith(
        "a ResourceQuota of the namespace refuses nvidia.com/gpu the budget allows (3 of 8 GPUs requested): "
        f"variant large: {refusal}; raise the quota to the budget, or lower gpuBudget"
    ), budget["message"]

    def only_large_short() -> Obj | None:
        cond = _current(kube, "bank", "Ready", "False", "ReplicasNotReady")
        return cond if cond is not None and "small" not in cond["message"] else None

    # The quota admits the small variant's pod: only the large one is short.
    not_ready = wait_for(only_large_short, 60, "Ready=False naming only the large variant")
    assert not_ready["message"] == "ready/desired: large 0/1 (pods cannot be created: Degraded)", not_ready
    wait_for(lambda: _warnings(kube, "bank", "ReplicaFailure"), 30, "a Warning Event ReplicaFailure")

    _quota(kube, "gpu", {"requests.nvidia.com/gpu": "8"})
    wait_for(lambda: _current(kube, "bank", "Degraded", "False", "AsExpected"), 90, "Degraded cleared")
    wait_for(lambda: _current(kube, "bank", "GPUBudgetFits", "True", "Fits"), 30, "GPUBudgetFits=True/Fits")
    wait_for(lambda: ready(kube, "bank"), 60, "pool Ready")
    assert _deployment_condition(kube, "bank-large", "ReplicaFailure", "FailedCreate") is None
    # Once when it showed, not once per pass while it lasted.
    assert len(_warnings(kube, "bank", "ReplicaFailure")) == 1, _warnings(kube, "bank", "ReplicaFailure")


def test_a_pod_count_quota_is_replica_failure_but_no_gpu_quota(kube: Kube) -> None:
    """A quota on the number of pods refuses them too, but not for their GPUs: GPUBudgetFits stays
    True (lowering gpuBudget would not help). Deleted, the ReplicaSet's next try creates the pod."""
    _quota(kube, "pods", {"pods": "0"})
    kube.apply(pool_manifest("bank", scaling={"enabled": False}, variants=[_variant("small")]))
    degraded = wait_for(
        lambda: _current(kube, "bank", "Degraded", "True", "ReplicaFailure"),
        90,
        "Degraded=True/ReplicaFailure",
    )
    assert "variant small: its ReplicaSet cannot create pods: " in degraded["message"], degraded
    assert "exceeded quota: pods" in degraded["message"] and QUOTA_HINT in degraded["message"], degraded
    budget = kube.condition("modelpool", "bank", "GPUBudgetFits")
    assert budget is not None and (budget["status"], budget["reason"]) == ("True", "Fits"), budget

    kube.run("delete", "resourcequota", "pods")
    wait_for(lambda: _current(kube, "bank", "Degraded", "False", "AsExpected"), 90, "Degraded cleared")
    wait_for(lambda: ready(kube, "bank"), 60, "pool Ready")


def test_pod_security_restricted_is_replica_failure_until_the_documented_security_context(kube: Kube) -> None:
    """The namespace enforces PodSecurity ``restricted``: the stock pods (the image's root user) are
    refused, and Degraded names the fix the README gives, the variant's ``triton.securityContext``
    (with ``runAsNonRoot: true, runAsUser: 1000``), beside the namespace's label. Set, it gets the
    pods admitted under the same level: the new ReplicaSet creates them and Degraded clears."""
    kube.cluster.kubectl("label", "namespace", kube.namespace, f"{RESTRICTED}=restricted")
    manifest = pool_manifest("bank", scaling={"enabled": False}, variants=[_variant("small")])
    kube.apply(manifest)
    degraded = wait_for(
        lambda: _current(kube, "bank", "Degraded", "True", "ReplicaFailure"),
        90,
        "Degraded=True/ReplicaFailure",
    )
    assert 'violates PodSecurity "restricted:latest"' in degraded["message"], degraded
    assert "runAsNonRoot != true" in degraded["message"] and POD_SECURITY_HINT in degraded["message"], (
        degraded
    )
    budget = kube.condition("modelpool", "bank", "GPUBudgetFits")
    assert budget is not None and (budget["status"], budget["reason"]) == ("True", "Fits"), budget

    fixed = copy.deepcopy(manifest)
    fixed["spec"]["variants"][0]["triton"] = {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000}}
    kube.apply(fixed)
    wait_for(lambda: _current(kube, "bank", "Degraded", "False", "AsExpected"), 90, "Degraded cleared")
    wait_for(lambda: ready(kube, "bank"), 60, "pool Ready")
    namespace = json.loads(kube.cluster.kubectl("get", "namespace", kube.namespace, "-o", "json").stdout)
    assert namespace["metadata"]["labels"][RESTRICTED] == "restricted"  # the level was not lowered


def test_a_rollout_past_its_progress_deadline_is_reported_behind_what_holds_it(kube: Kube) -> None:
    """The variant's pods wait for nodes its nodeSelector matches (none yet): the rollout makes no
    progress, and kube-controller-manager's Deployment controller says so once the Deployment's
    ``progressDeadlineSeconds`` passes. The operator leaves that field at Kubernetes' default (600 s)
    and does not own it: the test sets it to 5 s on the Deployment, as an administrator could.
    Degraded leads with the pending pods (what stalls the rollout) and names the stall behind them;
    with a matching node added the pods run and Degraded clears."""
    label = {"test-pool": kube.namespace}
    manifest = pool_manifest(
        "bank",
        scaling={"enabled": False},
        gpuPool={"gpuBudget": 8, "nodeSelector": label},
        variants=[_variant("small")],
    )
    try:
        kube.apply(manifest)
        wait_for(
            lambda: _current(kube, "bank", "Degraded", "True", "PodsUnschedulable"), 90, "PodsUnschedulable"
        )
        kube.run(
            "patch",
            "deployment",
            "bank-small",
            "--type=merge",
            "-p",
            '{"spec":{"progressDeadlineSeconds":5}}',
        )
        stalled = wait_for(
            lambda: _deployment_condition(kube, "bank-small", "Progressing", "ProgressDeadlineExceeded"),
            60,
            "the Deployment's Progressing=False/ProgressDeadlineExceeded",
        )
        assert stalled["status"] == "False", stalled

        def reported() -> Obj | None:
            cond = _current(kube, "bank", "Degraded", "True", "PodsUnschedulable")
            return cond if cond is not None and "; ProgressDeadlineExceeded: " in cond["message"] else None

        degraded = wait_for(reported, 60, "ProgressDeadlineExceeded in Degraded")
        assert (
            "; ProgressDeadlineExceeded: variant small: its rollout made no progress within the Deployment's "
            f"progressDeadlineSeconds: {stalled['message']}"
        ) in degraded["message"], degraded
        assert "didn't match Pod's node affinity/selector" in degraded["message"], degraded
        wait_for(lambda: _warnings(kube, "bank", "ProgressDeadlineExceeded"), 30, "a Warning Event")

        kube.cluster.ensure_nodes(1, 8, prefix=f"{kube.namespace}-node", labels=label)
        wait_for(lambda: _current(kube, "bank", "Degraded", "False", "AsExpected"), 90, "Degraded cleared")
        wait_for(lambda: ready(kube, "bank"), 60, "pool Ready")
        assert len(_warnings(kube, "bank", "ProgressDeadlineExceeded")) == 1
    finally:  # the shared cluster keeps no nodes of a test, failed or not
        kube.cluster.kubectl("delete", "nodes", "-l", f"test-pool={kube.namespace}", "--wait=false")


def test_a_refused_prune_is_prune_failed_naming_the_permission_until_granted(
    cluster: DevCluster, namespace: str, tmp_path: Path, paused_session_operator: None
) -> None:
    """The operator runs as a ServiceAccount with the chart's RBAC less ``delete deployments``. A
    variant leaves the spec: the real API server refuses the delete of its Deployment (403), the
    pool says PruneFailed naming the Deployment, the permission and the fix, while the rest of the
    pass goes on (the variant's Service is deleted, the status of the others is written). Granted,
    the next pass deletes the Deployment and Degraded clears, without a restart."""
    # The suite's operator (full rights) would delete the Deployment itself: it pauses meanwhile.
    kube = Kube(cluster, namespace)
    sample = yaml.safe_load(POOL.read_text())
    with _operator_as_chart_sa(cluster, namespace, tmp_path, without=("delete", "deployments")) as (
        log,
        _,
        _,
    ):
        kube.apply(sample)
        wait_for(lambda: ready(kube, "banking77"), 90, "sample pool Ready")
        edited = copy.deepcopy(sample)
        edited["spec"]["variants"] = [v for v in sample["spec"]["variants"] if v["name"] != "int8"]
        kube.apply(edited)

        degraded = wait_for(
            lambda: _current(kube, "banking77", "Degraded", "True", "PruneFailed"),
            60,
            "Degraded=True/PruneFailed",
        )
        message = degraded["message"]
        assert message.startswith(
            "Deployment banking77-int8 stays although variant int8 left the spec: the API server refused its "
            "deletion: "
        ), message
        # The real API server's 403, then the operator's fix.
        assert 'cannot delete resource "deployments" in API group "apps"' in message, message
        assert (
            f"grant the operator `delete deployments.apps` in namespace {namespace} "
            "(the chart's role has it), "
            f"or delete it by hand: kubectl -n {namespace} delete deployments.apps banking77-int8"
        ) in message, message
        assert "Service banking77-int8" not in message, message
        # The rest of the pass went on: the Service (and the budget) of int8 went, the others' status.
        assert kube.get("deployment", "banking77-int8") is not None
        assert kube.get("service", "banking77-int8") is None and kube.get("pdb", "banking77-int8") is None
        pool = kube.get("modelpool", "banking77")
        assert pool is not None
        assert [(v["name"], v["readyReplicas"]) for v in pool["status"]["variants"]] == [
            ("small", 1),
            ("large", 1),
        ]
        ok = kube.condition("modelpool", "banking77", "Ready")
        assert ok is not None and ok["status"] == "True", ok
        wait_for(lambda: _warnings(kube, "banking77", "PruneFailed"), 30, "a Warning Event PruneFailed")
        time.sleep(4)  # a few more passes at a 1 s resync, each refused again
        assert len(_warnings(kube, "banking77", "PruneFailed")) == 1, _warnings(
            kube, "banking77", "PruneFailed"
        )

        grant_chart_rbac(cluster, namespace)
        wait_for(
            lambda: kube.get("deployment", "banking77-int8") is None, 30, "the Deployment pruned once granted"
        )
        wait_for(
            lambda: _current(kube, "banking77", "Degraded", "False", "AsExpected"), 30, "Degraded cleared"
        )
        deleted = [e["message"] for e in kube.events("banking77") if e["reason"] == "Deleted"]
        assert any(
            m.startswith("deleted Deployment banking77-int8: variant int8 left the spec") for m in deleted
        ), deleted
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert "reconcile of" not in text, text[-4000:]  # no pass failed: the refusal was reported, not raised
