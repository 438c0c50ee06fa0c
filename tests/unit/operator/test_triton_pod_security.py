"""The Triton pods' security context: defaults that the stock image (root unless told otherwise)
runs with, the fields that reach PodSecurity ``restricted``, no ServiceAccount token unless a
ServiceAccount is named, and no drift for a Deployment as the API server stores it.

Before, the pods had no securityContext (a namespace enforcing ``restricted`` refused them) and
every one had the namespace's default ServiceAccount token mounted."""

from __future__ import annotations

import copy
from typing import cast

import pytest
from pydantic import ValidationError

from modelpool.api.crdgen import KINDS, build_crd
from modelpool.builders.triton import build_deployment, is_subset
from modelpool.controllers.children import stamped
from modelpool.controllers.pool_reconciler import pool_path, reconcile_pool
from modelpool.kube import KubeClient, Obj
from unit.operator.test_disruption_budgets import DEPLOYMENTS, NS, POOL, UID, FakeKube, _variant
from unit.operator.test_triton_pod_spec import _pod, _spec

CONTAINER_DEFAULTS: Obj = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED: Obj = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "fsGroup": 1000}


def test_defaults_drop_privileges_without_changing_the_user() -> None:
    pod = _pod()
    (container,) = pod["containers"]
    assert container["securityContext"] == CONTAINER_DEFAULTS
    # no runAsUser: the image's own user (root for the stock images), so nothing stops starting
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False


def test_a_named_service_account_keeps_its_token() -> None:
    """Workload identity (EKS IRSA, GKE, AKS) reads the projected token: with serviceAccountName the
    pod leaves the mount to the ServiceAccount's own setting."""
    pod = _pod(serviceAccountName="triton-s3")
    assert pod["serviceAccountName"] == "triton-s3"
    assert "automountServiceAccountToken" not in pod
    assert pod["containers"][0]["securityContext"] == CONTAINER_DEFAULTS


def test_the_security_context_fields_reach_podsecurity_restricted() -> None:
    pod = _pod(securityContext=RESTRICTED)
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, **RESTRICTED}
    (container,) = pod["containers"]
    # PodSecurity "restricted": no privilege escalation, every capability dropped, non-root,
    # RuntimeDefault seccomp, not uid 0.
    context = {**pod["securityContext"], **container["securityContext"]}
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    partial = _pod(securityContext={"runAsUser": 1000})
    assert partial["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 1000}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"runAsUser": -1}, "runAsUser"),
        ({"fsGroup": 2**31}, "fsGroup"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "runAsNonRoot"),
        ({"privileged": True}, "privileged"),
    ],
)
def test_impossible_security_contexts_are_refused(context: Obj, expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        _spec(securityContext=context)
    assert "triton.securityContext" in str(err.value) and expected in str(err.value), str(err.value)


def test_the_crd_takes_the_same_fields_and_refuses_root_with_run_as_non_root() -> None:
    pools = build_crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    triton = pools["properties"]["variants"]["items"]["properties"]["triton"]
    context = triton["properties"]["securityContext"]
    assert set(context["properties"]) == {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"}
    rules = [r["rule"] for r in context["x-kubernetes-validations"]]
    assert any("runAsNonRoot" in rule and "runAsUser" in rule for rule in rules)


def test_an_empty_security_context_hashes_as_none() -> None:
    """``securityContext: {}`` and no securityContext are one pod template (and one spec hash)."""
    empty, unset = _spec(securityContext={}), _spec()
    one = build_deployment("bank", "ns", "u", empty, empty.variants[0], replicas=1)
    two = build_deployment("bank", "ns", "u", unset, unset.variants[0], replicas=1)
    assert stamped(one) == stamped(two)


def _as_stored(body: Obj) -> Obj:
    """A Deployment as the API server stores it: an empty pod securityContext object, the defaults
    of the container, and what an admission policy may add to either context (e.g. OpenShift's
    restricted SCC sets runAsUser and seLinuxOptions)."""
    stored = copy.deepcopy(body)
    pod = stored["spec"]["template"]["spec"]
    pod.setdefault("securityContext", {})["seLinuxOptions"] = {"level": "s0:c26,c5"}
    pod["securityContext"].setdefault("runAsUser", 1000680000)
    pod["serviceAccountName"] = pod.get("serviceAccountName", "default")
    pod["serviceAccount"] = pod["serviceAccountName"]
    container = pod["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    container["securityContext"]["capabilities"]["drop"] = ["ALL"]
    return stored


class StoresDefaults(FakeKube):
    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        if "/deployments/" in path:
            body = _as_stored(body)
        return await super().apply(path, body, force=force)


@pytest.mark.parametrize("triton", [{}, {"securityContext": RESTRICTED}, {"serviceAccountName": "triton-s3"}])
async def test_a_deployment_as_the_api_server_stores_it_is_no_drift(triton: Obj) -> None:
    pool = {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {
            "disruptionBudget": {"enabled": False},
            "gpuPool": {"gpuBudget": 8},
            "variants": [_variant("small", **({"triton": triton} if triton else {}))],
        },
    }
    kube = StoresDefaults({pool_path(NS, POOL): pool})
    for _ in range(2):
        await reconcile_pool(cast(KubeClient, kube), NS, POOL, lambda *e: None)
    kube.requests.clear()
    events: list[tuple[str, ...]] = []
    await reconcile_pool(cast(KubeClient, kube), NS, POOL, lambda *e: events.append(e))
    assert kube.writes() == [] and events == [], (kube.writes(), events)
    stored = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]["spec"]["template"]["spec"]
    assert stored["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_a_changed_security_context_is_drift() -> None:
    spec = _spec()
    desired = build_deployment("bank", "ns", "u", spec, spec.variants[0], replicas=1)
    live = _as_stored(desired)
    assert is_subset(desired, live)
    live["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert not is_subset(desired, live)
    live = _as_stored(desired)
    live["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert not is_subset(desired, live)
