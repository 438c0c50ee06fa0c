"""A field the spec stops setting leaves the child: the spec hash annotation makes the change
visible to the drift check, which compares only the fields a manifest sets."""

from __future__ import annotations

import copy
from typing import Any

from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders.triton import build_deployment
from modelpool.controllers.children import DEPLOYMENT, SPEC_HASH, converge_child, stamped
from modelpool.controllers.pool_status import ChildIssues

Obj = dict[str, Any]
UID = "uid-1"


class RecordingKube:
    """Answers an apply with what the API server would store: the manifest plus its defaults."""

    def __init__(self) -> None:
        self.applied: list[Obj] = []

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        self.applied.append(body)
        return _stored(body)

    async def get(self, path: str) -> Obj | None:
        raise AssertionError("the child is listed")


def _stored(manifest: Obj) -> Obj:
    live = copy.deepcopy(manifest)
    live["metadata"]["resourceVersion"] = "7"
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    return live


def _deployment(**gpu_pool: Any) -> Obj:
    spec = ModelPoolSpec.model_validate(
        {
            "gpuPool": {"gpuBudget": 8, **gpu_pool},
            "variants": [{"name": "small", "tier": "small", "model": {"name": "s", "repository": "/m"}}],
        }
    )
    return build_deployment("bank", "ns", UID, spec, spec.variants[0], replicas=2)


async def _converge(kube: RecordingKube, manifest: Obj, live: Obj) -> list[tuple[str, ...]]:
    """Converge the child; the Events it posted."""
    listed = {manifest["metadata"]["name"]: live}
    events: list[tuple[str, ...]] = []
    await converge_child(kube, DEPLOYMENT, manifest, UID, lambda *e: events.append(e), ChildIssues(), listed)  # type: ignore[arg-type]
    return events


async def test_a_removed_node_selector_key_and_the_last_toleration_are_applied_away() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    before = _deployment(nodeSelector={"gpu": "a100", "zone": "a"}, tolerations=[toleration])
    live = _stored(stamped(before))
    kube = RecordingKube()
    await _converge(kube, before, live)
    assert kube.applied == []  # unchanged: nothing sent

    after = _deployment(nodeSelector={"gpu": "a100"})
    events = await _converge(kube, after, live)
    assert [e[1] for e in events] == ["Updated"]  # a real change: said
    (sent,) = kube.applied
    pod = sent["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"} and "tolerations" not in pod
    assert sent["metadata"]["annotations"][SPEC_HASH] != live["metadata"]["annotations"][SPEC_HASH]


async def test_the_hash_ignores_the_replica_count_and_a_child_without_it_is_stamped_once() -> None:
    manifest = _deployment()
    assert (
        stamped(manifest)["metadata"]["annotations"]
        == stamped({**manifest, "spec": {**manifest["spec"], "replicas": 9}})["metadata"]["annotations"]
    )
    kube = RecordingKube()
    events = await _converge(kube, manifest, _stored(manifest))  # made by an operator before the hash
    assert len(kube.applied) == 1 and SPEC_HASH in kube.applied[0]["metadata"]["annotations"]
    assert events == []  # only stamped: no Event per child after an upgrade
    await _converge(kube, manifest, _stored(kube.applied[0]))
    assert len(kube.applied) == 1


async def test_a_child_from_before_the_hash_being_scaled_is_stamped_without_an_updated_event() -> None:
    manifest = _deployment()
    old = _stored({**manifest, "spec": {**manifest["spec"], "replicas": 1}})
    kube = RecordingKube()
    assert await _converge(kube, manifest, old) == []  # the scaling has its own Scaled Event
    assert kube.applied[0]["spec"]["replicas"] == 2
