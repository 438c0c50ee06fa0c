"""Specs the API server admits at the edges of the schema (found by tests/integration/cluster/
test_spec_fuzz.py): each once made the operator fail a pass, loop on a correction, or build a
child the API server refused."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import httpx
import pytest
from pydantic import ValidationError

from modelpool.api.base import LABEL_KEY_PATTERN, is_label_key
from modelpool.api.crdgen import KINDS, build_crd
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.api.semantics import child_name_problems
from modelpool.builders.triton import build_deployment, is_subset, parse_quantity
from modelpool.controllers import policy_reconciler
from modelpool.controllers.profiles import load_profiles, profile_condition
from modelpool.controllers.routing_config import build_router_config, plan_weights
from modelpool.kube import KubeClient, KubeError, Obj

API = "modelpool.dev/v1alpha1"


def _variant(**extra: Any) -> dict[str, Any]:
    return {"name": "small", "tier": "small", "model": {"name": "m", "repository": "/m"}, **extra}


def _pool(**gpu_pool: Any) -> dict[str, Any]:
    return {"gpuPool": {"gpuBudget": 4, **gpu_pool}, "variants": [_variant()]}


def _policy(**extra: Any) -> dict[str, Any]:
    return {
        "poolRef": {"name": "bank"},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
        **extra,
    }


# --- the longest latency SLO the schema admits ------------------------------------------------


def test_the_longest_latency_slo_builds_a_router_config() -> None:
    """latencySLOMs 600000 once gave timeoutMs 6000000, which RouterConfig refuses (a failed pass
    every 5 s, no status)."""
    policy = RoutingPolicySpec.model_validate(_policy(objectives={"latencySLOMs": 600_000}))
    pool = ModelPoolSpec.model_validate(_pool())
    config = build_router_config("ns", "bank", policy, pool, plan_weights(policy, pool, None), 1)
    assert config.variants[0].timeout_ms == 600_000
    small = RoutingPolicySpec.model_validate(_policy(objectives={"latencySLOMs": 200}))
    assert (
        build_router_config("ns", "bank", small, pool, plan_weights(small, pool, None), 1)
        .variants[0]
        .timeout_ms
        == 2000
    )


# --- quantities the API server rewrites --------------------------------------------------------

STORED = [
    ("0.0001", "1m"),
    ("1.5m", "2m"),
    ("1.0000001", "1001m"),
    ("0.0001Ki", "103m"),
    ("0.1Ki", "102400m"),
    ("1.23456789012345678901234567890", "1235m"),
    ("8Ei", "9223372036854775807"),
    ("999999999999999999999999Ei", "9223372036854775807"),
    ("99999999999999999999", "99999999999999999999"),
    ("9" * 64, "9" * 64),
    ("1000m", "1"),
]


@pytest.mark.parametrize(("desired", "stored"), STORED)
def test_a_quantity_equals_what_the_api_server_stores_for_it(desired: str, stored: str) -> None:
    """Measured on kube-apiserver 1.36 (a Pod's resources). A quantity below a thousandth or a
    binary one past int64 once looked drifted on every pass: an 'Updated' event every resync."""
    assert is_subset({"cpu": desired}, {"cpu": stored})


@pytest.mark.parametrize(("desired", "stored"), [("2", "1"), ("0.0015", "1m"), ("9" * 63 + "8", "9" * 64)])
def test_different_quantities_still_differ(desired: str, stored: str) -> None:
    assert not is_subset({"cpu": desired}, {"cpu": stored})
    assert parse_quantity("bogus") is None


def test_an_empty_environment_value_is_left_out_as_the_api_server_stores_it() -> None:
    """env [{name: A, value: ''}] once looked drifted on every pass: the API server drops the value."""
    spec = ModelPoolSpec.model_validate(
        {
            **_pool(),
            "variants": [_variant(triton={"env": [{"name": "A", "value": ""}, {"name": "B", "value": "b"}]})],
        }
    )
    dep = build_deployment("bank", "ns", "u1", spec, spec.variants[0], replicas=1)
    live = copy.deepcopy(dep)
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A"}, {"name": "B", "value": "b"}]
    assert is_subset(dep, live)


# --- fields whose values the API server refuses in a pod template -----------------------------

REFUSED_IN_A_POD: list[tuple[str, dict[str, Any], str]] = [
    ("toleration without key", _pool(tolerations=[{}]), "operator Exists"),
    ("toleration key", _pool(tolerations=[{"key": "bad key"}]), "tolerations"),
    ("toleration prefix", _pool(tolerations=[{"key": "a" * 254 + "/b"}]), "label key"),
    ("toleration value", _pool(tolerations=[{"key": "k", "value": "-x"}]), "tolerations"),
    ("tolerationSeconds", _pool(tolerations=[{"key": "k", "tolerationSeconds": 3}]), "NoExecute"),
    ("exists with value", _pool(tolerations=[{"operator": "Exists", "value": "v"}]), "takes no value"),
    ("nodeSelector key", _pool(nodeSelector={"bad key!": "x"}), "label key"),
    ("empty nodeSelector key", _pool(nodeSelector={"": "x"}), "label key"),
    ("nodeSelector value", _pool(nodeSelector={"pool": "-x"}), "nodeSelector"),
    ("image spaces", {**_pool(), "variants": [_variant(triton={"image": " x"})]}, "image"),
    ("image NEL", {**_pool(), "variants": [_variant(triton={"image": "x\x85"})]}, "image"),
    ("duplicate env", {**_pool(), "variants": [_variant(triton={"env": [{"name": "A"}] * 2})]}, "unique"),
]


@pytest.mark.parametrize(("case", "spec", "expected"), REFUSED_IN_A_POD, ids=[c[0] for c in REFUSED_IN_A_POD])
def test_what_a_pod_cannot_carry_is_refused_naming_the_field(
    case: str, spec: dict[str, Any], expected: str
) -> None:
    """Each was admitted and then refused by the API server in the Deployment (Accepted stayed
    True, Degraded said ChildConflict in the Deployment's words), or for the image, the Deployment
    was accepted and its ReplicaSet could never create a pod."""
    with pytest.raises(ValidationError) as err:
        ModelPoolSpec.model_validate(spec)
    assert expected in str(err.value), case


def test_what_a_pod_carries_is_admitted() -> None:
    spec = _pool(
        tolerations=[
            {"operator": "Exists"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "k", "value": "", "effect": "NoExecute", "tolerationSeconds": 0},
            {"key": "e.io/" + "k" * 63, "value": "A_b.c"},
        ],
        nodeSelector={"example.com/gpu": "", "k" * 63: "x" * 63},
    )
    spec["variants"] = [
        _variant(
            triton={
                "image": "ü/ï:1 x",
                "args": ["--log-info=ünïcode ✓\n\t"],
                "env": [
                    {"name": "A", "value": "日本語 \x85"},
                    {"name": "B"},
                    {"name": "C", "value": "\x7f\x9d"},
                ],
            },
            model={"name": "m", "repository": "/\x80"},
        )
    ]
    assert ModelPoolSpec.model_validate(spec).gpu_pool.tolerations[3].value == "A_b.c"


@pytest.mark.parametrize(
    ("labels", "valid"),
    [({"app": "router"}, True), ({"a.b/c": ""}, True), ({"app": "a,b"}, False), ({"bad key": "x"}, False)],
)
def test_router_selector_labels_are_label_keys_and_values(labels: dict[str, str], valid: bool) -> None:
    """matchLabels {app: 'a,b'} once selected pods labelled app=a *and* b; {'bad key': x} made every
    pass fail on the LIST (400 from the API server) with no status."""
    spec = _policy(routerSelector={"matchLabels": labels})
    if valid:
        RoutingPolicySpec.model_validate(spec)
        return
    with pytest.raises(ValidationError, match=r"routerSelector|matchLabels|label key"):
        RoutingPolicySpec.model_validate(spec)


def test_the_crds_carry_the_same_checks() -> None:
    """The API server checks what the models check (the cluster test sends it the cases above)."""
    pools = build_crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    gpu_pool = pools["properties"]["gpuPool"]["properties"]
    assert LABEL_KEY_PATTERN in gpu_pool["nodeSelector"]["x-kubernetes-validations"][0]["rule"]
    assert len(gpu_pool["tolerations"]["items"]["x-kubernetes-validations"]) == 4
    triton = pools["properties"]["variants"]["items"]["properties"]["triton"]["properties"]
    assert triton["env"]["x-kubernetes-list-map-keys"] == ["name"]
    assert "pattern" in triton["image"] and "pattern" not in triton["args"]["items"]  # args take any text
    policies = build_crd(KINDS[1])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    labels = policies["properties"]["routerSelector"]["properties"]["matchLabels"]
    assert "x-kubernetes-validations" in labels and "pattern" in labels["additionalProperties"]


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        *[("a", True), ("a/b", True), ("a.b-c/D_e.f", True), ("a" * 253 + "/b", True)],
        *[("a" * 254 + "/b", False), ("a/b/c", False), ("/b", False), ("b/", False), ("k" * 64, False)],
        ("A/b", False),
    ],
)
def test_label_keys(key: str, valid: bool) -> None:
    assert is_label_key(key) is valid


# --- names -------------------------------------------------------------------------------------


def test_a_pool_name_with_a_dot_is_refused_for_the_dot() -> None:
    """The message once said 'it must start with a letter' for 'my.pool', which does."""
    problems = child_name_problems("my.pool", ModelPoolSpec.model_validate(_pool()))
    assert [p.reason for p in problems] == ["InvalidChildName"]
    assert "'.'" in problems[0].message and "start with a letter" not in problems[0].message
    digit = child_name_problems("1pool", ModelPoolSpec.model_validate(_pool()))
    assert "start with a letter" in digit[0].message


class FakeKube:
    """The reads and writes reconcile_policy makes, against a dict of objects by path."""

    def __init__(self, objects: dict[str, Obj]) -> None:
        self.objects = objects
        self.applied: list[str] = []
        self.patched: list[Obj] = []

    async def get(self, path: str) -> Obj | None:
        return self.objects.get(path)

    async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        return []

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        self.applied.append(path)
        return body

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        self.patched.append(body)
        return body


def _reconcile(policy_name: str, policy: dict[str, Any], pool_name: str = "bank") -> tuple[Obj, FakeKube]:
    pool = {
        "apiVersion": API,
        "kind": "ModelPool",
        "metadata": {"name": pool_name, "uid": "u1"},
        "spec": _pool(),
    }
    obj = {"metadata": {"name": policy_name, "uid": "u2", "generation": 1}, "spec": policy}
    kube = FakeKube(
        {
            policy_reconciler.policy_path("ns", policy_name): obj,
            policy_reconciler.pool_path("ns", pool_name): pool,
        }
    )

    async def run() -> None:
        async with httpx.AsyncClient() as http:
            await policy_reconciler.reconcile_policy(
                cast(KubeClient, kube), http, "ns", policy_name, lambda *_: None
            )

    asyncio.run(run())
    assert kube.patched, "no status written"
    return kube.patched[-1]["status"], kube


def _condition(status: Obj, type_: str) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_policy_name_too_long_for_its_label_is_refused() -> None:
    """A 64-character name once failed every pass: its ConfigMap's label value was refused (422)."""
    status, kube = _reconcile("p" * 64, _policy())
    accepted = _condition(status, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NameTooLong")
    assert "metadata.name" in accepted["message"] and "shorter name" in accepted["message"]
    assert kube.applied == []
    status, kube = _reconcile("p" * 63, _policy())
    assert _condition(status, "Accepted")["status"] == "True" and kube.applied


def test_a_policy_on_a_pool_whose_children_cannot_be_named_is_refused() -> None:
    """A pool named 58 characters with a variant 'small' (a 64-character Service name) once made
    its policy fail every pass (RouterConfig refuses the Service name)."""
    pool = "p" * 58
    status, kube = _reconcile("p", _policy(poolRef={"name": pool}), pool_name=pool)
    refs = _condition(status, "ResolvedRefs")
    assert (refs["status"], refs["reason"]) == ("False", "InvalidPool")
    assert "spec.variants[0].name" in refs["message"] and "shorten" in refs["message"]
    assert kube.applied == []


def test_a_router_config_the_checks_did_not_foresee_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever RouterConfig refuses is reported in Programmed, not retried as a failed pass."""

    def refuse(*_: Any, **__: Any) -> Any:
        return RoutingPolicySpec.model_validate({})

    monkeypatch.setattr(policy_reconciler, "build_router_config", refuse)
    status, kube = _reconcile("p", _policy())
    programmed = _condition(status, "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "InvalidRouterConfig")
    assert "fix the policy or pool 'bank'" in programmed["message"]
    assert kube.applied == []


async def test_an_empty_inline_profile_is_named_briefly_with_its_variant_index() -> None:
    """``profile: {inline: {}}`` used to put 16 pydantic errors, with their help links, in the
    ProfilesCurrent message, under ``spec.variants[].profile.inline`` without an index."""
    spec = ModelPoolSpec.model_validate(
        {**_pool(), "variants": [_variant(), _variant(name="big", tier="large", profile={"inline": {}})]}
    )
    view = await load_profiles(cast(KubeClient, None), "ns", spec)  # inline profiles read nothing
    ok, reason, message = profile_condition(view) or (True, "", "")
    assert (ok, reason) == (False, "ProfileMissing")
    assert message.startswith(
        "big: spec.variants[1].profile.inline is not a profile: variant: Field required"
    )
    assert "(and 13 more)" in message and "errors.pydantic.dev" not in message, message


def test_a_policy_whose_namespace_terminates_ends_quietly() -> None:
    """A pass that read the policy just before its namespace began terminating: the API server
    refuses its ConfigMap with 403 NamespaceTerminating. That is the policy going away, as for a
    pool's children: no ReconcileError Event and traceback (a soak saw 14), no status, no retry."""

    class TerminatingKube(FakeKube):
        async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
            raise KubeError(403, "Forbidden", "namespace ns is being terminated", ("NamespaceTerminating",))

    pool = {
        "apiVersion": API,
        "kind": "ModelPool",
        "metadata": {"name": "bank", "uid": "u1"},
        "spec": _pool(),
    }
    obj = {"metadata": {"name": "p", "uid": "u2", "generation": 1}, "spec": _policy()}
    kube = TerminatingKube(
        {policy_reconciler.policy_path("ns", "p"): obj, policy_reconciler.pool_path("ns", "bank"): pool}
    )
    events: list[tuple[str, ...]] = []

    async def run() -> Any:
        async with httpx.AsyncClient() as http:
            return await policy_reconciler.reconcile_policy(
                cast(KubeClient, kube), http, "ns", "p", lambda *e: events.append(e)
            )

    assert asyncio.run(run()) is None
    assert kube.patched == []
    assert [e for e in events if e[0] == "Warning"] == []
