"""The variants' PodDisruptionBudgets on the real control plane: the API server checks the budget,
the operator applies one per variant, kube-controller-manager's disruption controller counts the
pods, and the real Eviction API (what `kubectl drain` calls) takes one replica at a time. A budget
deleted by hand comes back, one turned off goes, and an operator without access to
PodDisruptionBudgets reconciles the rest and says so once."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster.chart_rbac import ANY_VERB, drop_chart_rbac, grant_chart_rbac
from integration.cluster.kubetools import Kube, service_account_kubeconfig, start_operator, wait_for
from modelpool.devcluster.processes import stop_process
from modelpool.kubelogin import credentials_from_kubeconfig

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
CONDITION = "DisruptionBudgetApplied"


def _variant(name: str, replicas: int = 1, **extra: Any) -> Obj:
    return {
        "name": name,
        "tier": "small",
        "model": {"name": name, "repository": "/models"},
        "minReplicas": replicas,
        "maxReplicas": max(replicas, 1),
        **extra,
    }


def _pool(name: str, variants: list[Obj], **spec: Any) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": name},
        "spec": {"gpuPool": {"gpuBudget": 8}, "variants": variants, "scaling": {"enabled": False}, **spec},
    }


def _condition(kube: Kube, pool: str, reason: str) -> Obj | None:
    obj = kube.get("modelpool", pool) or {}
    cond = kube.condition("modelpool", pool, CONDITION)
    current = cond is not None and cond["observedGeneration"] == obj["metadata"]["generation"]
    return cond if current and cond["reason"] == reason else None


def _budgets(kube: Kube, pool: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in kube.list("pdb", f"modelpool.dev/pool={pool}")}


# --- the API server's checks ----------------------------------------------------------------------

REFUSED = [
    ({"disruptionBudget": {"maxUnavailable": 0}}, None, "spec.disruptionBudget.maxUnavailable"),
    ({"disruptionBudget": {"maxUnavailable": "0%"}}, None, "spec.disruptionBudget.maxUnavailable"),
    ({"disruptionBudget": {"maxUnavailable": "150%"}}, None, "spec.disruptionBudget.maxUnavailable"),
    ({}, {"maxUnavailable": 0}, "spec.variants[0].disruptionBudget.maxUnavailable"),
    ({}, {"maxUnavailable": "half"}, "spec.variants[0].disruptionBudget.maxUnavailable"),
]


@pytest.mark.parametrize(("spec", "variant", "field"), REFUSED, ids=[str(c[:2]) for c in REFUSED])
def test_a_budget_that_would_block_drains_is_refused_naming_the_field_and_the_fix(
    kube: Kube, spec: Obj, variant: Obj | None, field: str
) -> None:
    extra = {"disruptionBudget": variant} if variant is not None else {}
    manifest = _pool("refused", [_variant("small", **extra)], **spec)
    proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest), check=False)
    assert proc.returncode != 0, f"{spec} {variant}: the API server accepted it"
    assert field in proc.stderr, proc.stderr
    assert "a percentage from 1% to 100%" in proc.stderr and "set enabled: false" in proc.stderr, proc.stderr


def test_there_is_no_min_available(kube: Kube) -> None:
    manifest = _pool("refused", [_variant("small")], disruptionBudget={"minAvailable": 2})
    proc = kube.run("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(manifest), check=False)
    assert proc.returncode != 0 and 'unknown field "spec.disruptionBudget.minAvailable"' in proc.stderr


# --- a drain, through the real Eviction API -------------------------------------------------------


def _evict(kube: Kube, pod: str) -> httpx.Response:
    """POST pods/<pod>/eviction (policy/v1), as `kubectl drain` does."""
    creds = credentials_from_kubeconfig(kube.cluster.kubeconfig)
    headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": kube.namespace},
    }
    with httpx.Client(base_url=creds.server, verify=creds.verify, headers=headers, timeout=30) as http:
        return http.post(f"/api/v1/namespaces/{kube.namespace}/pods/{pod}/eviction", json=body)


def _counted(kube: Kube, name: str, healthy: int, allowed: int) -> Obj | None:
    """The budget's status once the disruption controller has counted ``healthy`` pods and allows
    ``allowed`` evictions for the budget's current spec."""
    pdb = kube.get("pdb", name) or {}
    status = pdb.get("status", {})
    ok = status.get("observedGeneration") == pdb.get("metadata", {}).get("generation") and (
        status.get("currentHealthy"),
        status.get("disruptionsAllowed"),
    ) == (healthy, allowed)
    return status if ok else None


def test_a_drain_evicts_one_replica_at_a_time(kube: Kube) -> None:
    """Two replicas on a node of the test's own, maxUnavailable 1 (the default). The node is
    cordoned first, as `kubectl drain` does, so the replacement of an evicted replica cannot
    start: the budget has then no eviction to spare until it does, whatever kwok's timing. That is
    the check that fails without the operator's budget (both evictions would pass)."""
    node = f"{kube.namespace}-node-0"
    kube.cluster.ensure_nodes(1, 8, prefix=f"{kube.namespace}-node", labels={"test-pool": kube.namespace})
    try:
        kube.apply(
            _pool(
                "drain",
                [_variant("small", 2)],
                gpuPool={"gpuBudget": 8, "nodeSelector": {"test-pool": kube.namespace}},
            )
        )
        wait_for(lambda: _condition(kube, "drain", "Applied"), 60, "DisruptionBudgetApplied=True/Applied")
        pdb = wait_for(lambda: kube.get("pdb", "drain-small"), 10, "the variant's PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == {
            "modelpool.dev/pool": "drain",
            "modelpool.dev/variant": "small",
        }
        # The disruption controller counts the variant's two ready pods: one of them may go.
        status = wait_for(
            lambda: _counted(kube, "drain-small", 2, 1), 60, "the disruption controller's count"
        )
        assert (status["expectedPods"], status["desiredHealthy"]) == (2, 1)

        kube.cluster.kubectl("cordon", node)
        first, second = sorted(
            p["metadata"]["name"] for p in kube.list("pods", "modelpool.dev/variant=small")
        )
        evicted = _evict(kube, first)
        assert evicted.status_code == 201, evicted.text
        refused = _evict(kube, second)
        assert refused.status_code == 429, refused.text
        assert "disruption budget" in refused.json()["message"], refused.text
        # The controller's own count once the evicted pod is gone: its replacement is pending on the
        # cordoned node, one healthy pod is left, and it must stay.
        status = wait_for(lambda: _counted(kube, "drain-small", 1, 0), 60, "the count after the eviction")
        assert status["desiredHealthy"] == 1
        time.sleep(2)
        assert _evict(kube, second).status_code == 429

        # Uncordoned (the drained node back, or room elsewhere), the replacement becomes ready and
        # the drain goes on with the next replica.
        kube.cluster.kubectl("uncordon", node)
        wait_for(lambda: _counted(kube, "drain-small", 2, 1), 60, "the replacement counted as healthy")
        assert _evict(kube, second).status_code == 201
    finally:
        kube.cluster.kubectl("delete", "node", node, "--wait=false", check=False)


# --- level-based: deleted, turned off -------------------------------------------------------------


def test_a_deleted_budget_comes_back_and_one_turned_off_goes(kube: Kube) -> None:
    kube.apply(_pool("bank", [_variant("small"), _variant("large")]))
    wait_for(lambda: _condition(kube, "bank", "Applied"), 60, "DisruptionBudgetApplied=True/Applied")
    old = wait_for(lambda: (b := _budgets(kube, "bank")) and len(b) == 2 and b, 10, "two budgets")
    assert old["bank-small"]["metadata"]["ownerReferences"][0]["kind"] == "ModelPool"

    kube.run("delete", "pdb", "bank-small", "--wait=true")
    new = wait_for(lambda: kube.get("pdb", "bank-small"), 30, "the deleted budget recreated")
    assert new["metadata"]["uid"] != old["bank-small"]["metadata"]["uid"]
    assert new["spec"] == old["bank-small"]["spec"]
    assert "Created" in {e["reason"] for e in kube.events("bank")}

    # Off for one variant: its budget goes, the other stays.
    kube.apply(_pool("bank", [_variant("small", disruptionBudget={"enabled": False}), _variant("large")]))
    wait_for(lambda: set(_budgets(kube, "bank")) == {"bank-large"}, 30, "only bank-large's budget left")
    # Off for the pool: every budget goes; the Deployments stay.
    kube.apply(_pool("bank", [_variant("small"), _variant("large")], disruptionBudget={"enabled": False}))
    wait_for(lambda: _budgets(kube, "bank") == {}, 30, "no budget left")
    cond = wait_for(lambda: _condition(kube, "bank", "Disabled"), 30, "DisruptionBudgetApplied=True/Disabled")
    assert cond["status"] == "True" and "spec.disruptionBudget is off" in cond["message"]
    assert len(kube.list("deployments", "modelpool.dev/pool=bank")) == 2


# --- someone else's budget over the same pods ------------------------------------------------------


def _their_budget(name: str, match: Obj) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": 1, "selector": match},
    }


def test_a_budget_of_someone_elses_over_a_variants_pods_wins_and_is_reported(kube: Kube) -> None:
    """A team's own budget that selects a variant's pods: the API server refuses to evict a pod that
    two budgets select (500), so with ModelPool's as well no drain could take it. The variant's own
    budget goes while theirs is there, the condition names theirs and the fix, the other variant
    keeps its budget, the pod can be evicted, and ModelPool's budget is back once theirs is gone."""
    # The premise, on the real API server: a pod that two budgets select cannot be evicted at all.
    probe = {"app": "two-budgets"}
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "labels": probe},
            "spec": {"nodeSelector": {"type": "kwok"}, "containers": [{"name": "c", "image": "probe"}]},
        }
    )
    for name in ("probe-a", "probe-b"):
        kube.apply(_their_budget(name, {"matchLabels": probe}))
    # (A pod that is not Running is evicted without looking at budgets.)
    wait_for(
        lambda: (kube.get("pod", "probe") or {}).get("status", {}).get("phase") == "Running" or None,
        60,
        "probe Running",
    )
    refused = _evict(kube, "probe")
    assert refused.status_code == 500, refused.text
    assert "more than one PodDisruptionBudget" in refused.json()["message"], refused.text

    kube.apply(_pool("shared", [_variant("small"), _variant("large", tier="large")]))
    wait_for(lambda: _condition(kube, "shared", "Applied"), 60, "DisruptionBudgetApplied=True/Applied")
    wait_for(lambda: set(_budgets(kube, "shared")) == {"shared-small", "shared-large"}, 10, "two budgets")

    # Theirs selects the small variant's pods by an expression (and not the large one's).
    match = {
        "matchLabels": {"modelpool.dev/pool": "shared"},
        "matchExpressions": [{"key": "modelpool.dev/tier", "operator": "In", "values": ["small"]}],
    }
    kube.apply(_their_budget("team-guard", match))
    cond = wait_for(lambda: _condition(kube, "shared", "OverlappingBudget"), 30, "OverlappingBudget")
    assert cond["status"] == "False"
    assert "variant small: PodDisruptionBudget team-guard already selects its pods" in cond["message"]
    assert "spec.variants[0].disruptionBudget.enabled: false" in cond["message"], cond
    assert "large" not in cond["message"].split("(")[0], cond
    wait_for(lambda: set(_budgets(kube, "shared")) == {"shared-large"}, 30, "only shared-large's budget left")
    assert kube.get("pdb", "team-guard") is not None  # theirs is never touched
    events = [e for e in kube.events("shared") if e["reason"] in ("OverlappingBudget", "Deleted")]
    assert any(e["reason"] == "OverlappingBudget" and e["type"] == "Warning" for e in events), events
    assert any("team-guard selects its pods" in e["message"] for e in events), events

    # With one budget over it, the pod can be evicted (with two the API server answers 500).
    wait_for(lambda: _counted(kube, "team-guard", 1, 1), 60, "the disruption controller's count of theirs")
    [pod] = [
        p["metadata"]["name"]
        for p in kube.list("pods", "modelpool.dev/pool=shared,modelpool.dev/variant=small")
    ]
    evicted = _evict(kube, pod)
    assert evicted.status_code == 201, evicted.text

    # Theirs gone: ModelPool's is back.
    kube.run("delete", "pdb", "team-guard", "--wait=true")
    wait_for(lambda: _condition(kube, "shared", "Applied"), 30, "DisruptionBudgetApplied=True/Applied again")
    wait_for(
        lambda: set(_budgets(kube, "shared")) == {"shared-small", "shared-large"}, 10, "two budgets again"
    )


# --- without access to PodDisruptionBudgets -------------------------------------------------------


@contextlib.contextmanager
def _operator_without_budget_access(kube: Kube, tmp_path: Path) -> Iterator[Path]:
    """The operator's log; it watches the test's namespace as ``op``, without access to budgets."""
    grant_chart_rbac(kube.cluster, kube.namespace, without=(ANY_VERB, "poddisruptionbudgets"))
    kubeconfig = service_account_kubeconfig(
        kube.cluster, kube.namespace, "op", tmp_path / "sa-kubeconfig.yaml"
    )
    log = tmp_path / "operator.log"
    env = {"KUBECONFIG": str(kubeconfig), "MODELPOOL_RESYNC_SECONDS": "2"}
    proc = start_operator(log, env, "--namespace", kube.namespace)
    try:
        yield log
        assert proc.poll() is None, log.read_text()
    finally:
        kube.run("delete", "modelpool", "--all", "--wait=false", check=False)
        stop_process(proc, grace=20, group=True)
        drop_chart_rbac(kube.cluster, kube.namespace)


def test_without_access_to_budgets_the_pool_is_reconciled_and_it_is_said_once(
    kube: Kube, tmp_path: Path, paused_session_operator: None
) -> None:
    # The suite's operator (full rights) would create the budgets itself: it pauses meanwhile.
    with _operator_without_budget_access(kube, tmp_path) as log:
        kube.apply(_pool("bank", [_variant("small"), _variant("large")]))
        cond = wait_for(lambda: _condition(kube, "bank", "PermissionMissing"), 60, "PermissionMissing")
        assert cond["status"] == "False"
        assert "poddisruptionbudgets" in cond["message"], cond
        assert "grant get, list, create, patch, delete on poddisruptionbudgets.policy" in cond["message"]
        # Everything else is reconciled: children, readiness.
        assert len(kube.list("deployments", "modelpool.dev/pool=bank")) == 2
        assert len(kube.list("services", "modelpool.dev/pool=bank")) == 2
        wait_for(
            lambda: (r := kube.condition("modelpool", "bank", "Ready")) and r["status"] == "True", 60, "Ready"
        )
        time.sleep(6)  # about three more listing passes at a 2 s resync: still missing
        text = log.read_text()
        said = [line for line in text.splitlines() if "PermissionMissing" in line]
        assert len(said) == 1 and "WARNING" in said[0], said
        warnings = [e for e in kube.events("bank") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["PermissionMissing"], warnings
        # At the start, the permission check named it too (one WARNING, and the operator started).
        preflight = [
            line for line in text.splitlines() if "missing permissions: get poddisruptionbudgets" in line
        ]
        assert len(preflight) == 1 and "WARNING" in preflight[0] and "starts without" in preflight[0], text

        # Granted: the next listing pass applies the budgets, no restart needed.
        grant_chart_rbac(kube.cluster, kube.namespace)
        wait_for(lambda: _condition(kube, "bank", "Applied"), 30, "DisruptionBudgetApplied=True/Applied")
        assert set(_budgets(kube, "bank")) == {"bank-small", "bank-large"}
    assert "Traceback" not in log.read_text()
