"""A Deployment as the API server stores it is no drift: empty toleration fields it drops, and
entries of map-lists (env, containers, ports, volumes, ...) that another field manager added and a
server-side apply keeps. Either once made every reconcile pass apply the Deployment again and post
an 'Updated' Event, forever."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from modelpool.builders.triton import is_subset
from modelpool.controllers.pool_reconciler import pool_path, reconcile_pool
from modelpool.kube import KubeClient, Obj
from unit.operator.test_disruption_budgets import DEPLOYMENTS, NS, POOL, UID, FakeKube, _variant

Events = list[tuple[str, str, str]]


def _pool(spec: Obj) -> Obj:
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1},
        "spec": {"disruptionBudget": {"enabled": False}, **spec},
    }


async def _passes(kube: FakeKube, events: Events, count: int) -> None:
    for _ in range(count):
        await reconcile_pool(cast(KubeClient, kube), NS, POOL, lambda *e: events.append(e))


async def _is_quiet(kube: FakeKube) -> None:
    """One more pass writes nothing and says nothing."""
    kube.requests.clear()
    events: Events = []
    await _passes(kube, events, 1)
    assert kube.writes() == [] and events == [], (kube.writes(), events)


# --- D4: empty toleration fields --------------------------------------------------------------


class OmitEmpty(FakeKube):
    """Stores tolerations as the API server does: key, value, effect and operator are ``omitempty``."""

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        body = copy.deepcopy(body)
        for toleration in body.get("spec", {}).get("template", {}).get("spec", {}).get("tolerations", []):
            for key in ("key", "value", "effect", "operator"):
                if toleration.get(key) == "":
                    del toleration[key]
        return await super().apply(path, body, force=force)


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": ""},
        {"key": "dedicated", "operator": "Equal", "value": ""},
        {"key": "", "operator": "Exists"},
        {"key": "", "operator": "Exists", "value": "", "effect": "NoExecute", "tolerationSeconds": 0},
    ],
)
async def test_empty_toleration_fields_are_no_drift(toleration: dict[str, Any]) -> None:
    kube = OmitEmpty(
        {
            pool_path(NS, POOL): _pool(
                {"gpuPool": {"gpuBudget": 8, "tolerations": [toleration]}, "variants": [_variant("small")]}
            )
        }
    )
    await _passes(kube, [], 3)
    await _is_quiet(kube)
    stored = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]["spec"]["template"]["spec"]["tolerations"]
    assert stored == [{k: v for k, v in toleration.items() if v != ""}]


# --- D5: entries another field manager owns -----------------------------------------------------


FOREIGN_ENV = {"name": "TZ", "value": "UTC"}
FOREIGN_CONTAINER = {"name": "istio-proxy", "image": "istio/proxyv2"}
FOREIGN_PORT = {"name": "debug", "containerPort": 9000, "protocol": "TCP"}
FOREIGN_VOLUME = {"name": "certs", "secret": {"secretName": "certs"}}
FOREIGN_MOUNT = {"name": "certs", "mountPath": "/certs"}
FOREIGN_OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other"}


def _add_foreign(deployment: Obj) -> None:
    """What ``kubectl set env``, a Kyverno mutate rule or another controller adds to a Deployment."""
    pod = deployment["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    triton.setdefault("env", []).insert(0, FOREIGN_ENV)
    triton["ports"].append(FOREIGN_PORT)
    triton.setdefault("volumeMounts", []).append(FOREIGN_MOUNT)
    pod.setdefault("volumes", []).append(FOREIGN_VOLUME)
    pod["containers"].append(FOREIGN_CONTAINER)
    deployment["metadata"]["ownerReferences"].append(FOREIGN_OWNER)


class ServerSideApply(FakeKube):
    """Server-side apply as far as the foreign entries go: those the applier does not send, owned
    by another manager, stay."""

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        old = self.objects.get(path)
        body = copy.deepcopy(body)
        if old is not None and "/deployments/" in path:
            _add_foreign(body)
        return await super().apply(path, body, force=force)


async def test_entries_another_manager_added_are_no_drift() -> None:
    variant = _variant("small", triton={"env": [{"name": "LOG_VERBOSE", "value": "1"}]})
    kube = ServerSideApply({pool_path(NS, POOL): _pool({"gpuPool": {"gpuBudget": 8}, "variants": [variant]})})
    await _passes(kube, [], 1)
    _add_foreign(kube.objects[f"{DEPLOYMENTS}/{POOL}-small"])
    await _passes(kube, [], 2)
    await _is_quiet(kube)


async def test_a_changed_value_of_an_entry_the_operator_sets_is_still_drift() -> None:
    variant = _variant("small", triton={"env": [{"name": "LOG_VERBOSE", "value": "1"}]})
    kube = ServerSideApply({pool_path(NS, POOL): _pool({"gpuPool": {"gpuBudget": 8}, "variants": [variant]})})
    await _passes(kube, [], 1)
    deployment = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]
    _add_foreign(deployment)
    deployment["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = "0"  # kubectl set env
    events: Events = []
    await _passes(kube, events, 1)
    assert [e[1] for e in events] == ["Updated"]
    env = kube.objects[f"{DEPLOYMENTS}/{POOL}-small"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOG_VERBOSE", "value": "1"} in env


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        # Map-lists by their keys, in any order, entries the manifest does not set ignored.
        ({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "B"}, {"name": "A", "value": "1"}]}, True),
        ({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "A", "value": "2"}]}, False),
        ({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "B", "value": "1"}]}, False),
        ({"env": [{"name": "A"}]}, {}, False),
        (
            {"containers": [{"name": "t", "image": "i"}]},
            {"containers": [{"name": "s"}, {"name": "t", "image": "i"}]},
            True,
        ),
        ({"containers": [{"name": "t", "image": "i"}]}, {"containers": [{"name": "t", "image": "j"}]}, False),
        (
            {"ports": [{"containerPort": 1, "protocol": "TCP", "name": "a"}]},
            {
                "ports": [
                    {"containerPort": 1, "protocol": "UDP"},
                    {"containerPort": 1, "protocol": "TCP", "name": "a"},
                ]
            },
            True,
        ),
        (
            {"ports": [{"containerPort": 1, "protocol": "TCP"}]},
            {"ports": [{"containerPort": 1, "protocol": "UDP"}]},
            False,
        ),
        # A Service's ports are keyed by port and protocol.
        (
            {"ports": [{"port": 80, "protocol": "TCP"}]},
            {"ports": [{"port": 81, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}]},
            True,
        ),
        (
            {"volumes": [{"name": "v", "emptyDir": {}}]},
            {"volumes": [{"name": "w"}, {"name": "v", "emptyDir": {}}]},
            True,
        ),
        (
            {"volumeMounts": [{"name": "v", "mountPath": "/a"}]},
            {"volumeMounts": [{"name": "v", "mountPath": "/b"}]},
            False,
        ),
        (
            {"ownerReferences": [{"uid": "u", "name": "p"}]},
            {"ownerReferences": [{"uid": "x"}, {"uid": "u", "name": "p"}]},
            True,
        ),
        # Other lists (args, tolerations: atomic) still match item by item.
        ({"args": ["a"]}, {"args": ["a", "b"]}, False),
        ({"tolerations": [{"key": "k"}]}, {"tolerations": [{"key": "k"}, {"key": "j"}]}, False),
        ({"a": [{"name": "x"}]}, {"a": [{"name": "y"}, {"name": "x"}]}, False),
    ],
)
def test_map_lists_compare_by_key(desired: Obj, live: Obj, expected: bool) -> None:
    assert is_subset(desired, live) is expected
