"""A pool's children, whatever their kind: created when missing, corrected when drifted, never
taken over from someone else, deleted when the spec no longer wants them.

One code path serves the Deployments, Services and PodDisruptionBudgets: each is a manifest from
a pure builder (:mod:`modelpool.builders.triton`) applied with server-side apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from modelpool.builders.triton import LABEL_POOL, LABEL_VARIANT, MANAGED_BY, is_subset
from modelpool.controllers.backoff import forbidden, server_busy
from modelpool.controllers.pool_status import ChildIssues
from modelpool.kube import KubeClient, KubeError, Obj, resource_path

# (type, reason, message) -> posted as a Kubernetes Event on the pool.
EventSink = Callable[[str, str, str], None]


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    plural: str
    kind: str

    @property
    def resource(self) -> str:
        """As RBAC rules and ``kubectl auth can-i`` name it: ``deployments.apps``, ``services``."""
        group, _, _ = self.api_version.rpartition("/")
        return f"{self.plural}.{group}" if group else self.plural


DEPLOYMENT = ChildKind("apps/v1", "deployments", "Deployment")
SERVICE = ChildKind("v1", "services", "Service")
POD_DISRUPTION_BUDGET = ChildKind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")


SPEC_HASH = "modelpool.dev/spec-hash"
"""Annotation on each child: a hash of what the operator last applied (without the replica count).

The drift check compares only the fields a manifest sets (the API server adds defaults), so a
field the spec stops setting (the last toleration, a nodeSelector key, every env var) would never
look drifted and would stay. The hash changes when anything the operator wants changes, removals
included, and the server-side apply that follows drops what it no longer sets."""


def _without_replicas(manifest: Obj) -> Obj:
    """``manifest`` less ``spec.replicas``, which the scaler sets and which is no spec change."""
    return {**manifest, "spec": {k: v for k, v in manifest.get("spec", {}).items() if k != "replicas"}}


def stamped(manifest: Obj) -> Obj:
    """``manifest`` with its :data:`SPEC_HASH` annotation."""
    text = json.dumps(_without_replicas(manifest), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    metadata = manifest["metadata"]
    annotations = {**metadata.get("annotations", {}), SPEC_HASH: digest}
    return {**manifest, "metadata": {**metadata, "annotations": annotations}}


POOL_LABELS = (LABEL_POOL, "app.kubernetes.io/managed-by")


def pool_selector(pool: str) -> str:
    """The pool's children, as the operator's watches select them (its managed-by label)."""
    return ",".join(f"{key}={value}" for key, value in zip(POOL_LABELS, (pool, MANAGED_BY), strict=True))


def selected_by_pool(obj: Obj, pool: str) -> bool:
    """Whether :func:`pool_selector` selects ``obj`` (for objects listed without it)."""
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in zip(POOL_LABELS, (pool, MANAGED_BY), strict=True))


def owned_by(obj: Obj, uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences", [])
    )


def with_kind(kind: ChildKind, obj: Obj) -> Obj:
    """Items of a LIST carry no apiVersion/kind; they are filled in so that listed or cached
    objects compare with built manifests exactly as fetched ones do."""
    return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}


async def list_children(kube: KubeClient, kind: ChildKind, namespace: str, pool: str) -> dict[str, Obj]:
    """The pool's children of ``kind`` by name: one LIST."""
    items = await kube.list(resource_path(kind.api_version, kind.plural, namespace), pool_selector(pool))
    return {obj["metadata"]["name"]: with_kind(kind, obj) for obj in items}


async def converge_child(
    kube: KubeClient,
    kind: ChildKind,
    manifest: Obj,
    uid: str,
    emit: EventSink,
    issues: ChildIssues,
    listed: Mapping[str, Obj],
) -> Obj | None:
    """Create the child if missing, correct it if it drifted or the spec changed (its
    :data:`SPEC_HASH`), leave it alone otherwise.

    ``listed`` holds the pool's children found by label; a name missing there is looked up
    directly, so an object of someone else's that happens to have the name is never taken over.
    """
    manifest = stamped(manifest)
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    path = resource_path(kind.api_version, kind.plural, namespace, name)
    live = listed[name] if name in listed else await kube.get(path)
    if live is not None and not owned_by(live, uid):
        issues.conflicts.append(
            f"{kind.kind} {name} exists and is not owned by this pool; "
            "delete or rename it, or rename the variant"
        )
        return None
    if live is None:
        created = await kube.apply(path, manifest)
        emit("Normal", "Created", f"created {kind.kind} {name}")
        return created
    if is_subset(manifest, live):
        return live
    corrected = await kube.apply(path, manifest)
    if not _only_replicas_differ(manifest, live) and not _only_stamped(manifest, live):
        emit("Normal", "Updated", f"updated {kind.kind} {name} to match the pool's spec")
    return corrected


def _only_stamped(manifest: Obj, live: Obj) -> bool:
    """A child from before :data:`SPEC_HASH` that matches the spec: it gets the annotation, which
    is no change to report (the first pass after an upgrade would post one Event per child)."""
    if SPEC_HASH in live["metadata"].get("annotations", {}):
        return False
    annotations = {k: v for k, v in manifest["metadata"]["annotations"].items() if k != SPEC_HASH}
    metadata = {k: v for k, v in manifest["metadata"].items() if k != "annotations"}
    if annotations:
        metadata["annotations"] = annotations
    return is_subset(_without_replicas({**manifest, "metadata": metadata}), live)


def _only_replicas_differ(manifest: Obj, live: Obj) -> bool:
    """A scaling action (reported by its own Event), not a spec correction."""
    if "replicas" not in manifest.get("spec", {}):
        return False
    return is_subset(_without_replicas(manifest), live)


async def prune_children(
    kube: KubeClient,
    kind: ChildKind,
    namespace: str,
    uid: str,
    listed: Mapping[str, Obj],
    unwanted: Callable[[str | None], str | None],
    emit: EventSink,
    expected: Collection[str] = (),
    refusals: list[str] | None = None,
) -> None:
    """Delete the children of ``kind`` in ``listed`` that this pool owns and the spec no longer
    wants: ``unwanted`` is given a child's variant (its label) and says why it goes, or None.

    A child named in ``expected`` (the name the spec gives a child of a variant it still holds) is
    never deleted, whatever its labels say: ``listed`` is read before the pass converged the
    children, so a variant label removed or changed by hand, which that pass just restored, would
    otherwise read as a variant that left the spec, and the child would be deleted and recreated.

    A delete the API server refuses raises, unless ``refusals`` is given: then each refusal (a
    missing ``delete`` permission, an admission webhook) is added to it, in words that name the
    child and the fix, and the other children are still deleted. The API server away or the
    namespace going raises all the same (the pass is retried, or ends with the namespace).
    """
    for obj in listed.values():
        name = obj["metadata"]["name"]
        if name in expected:
            continue
        why = unwanted(obj["metadata"].get("labels", {}).get(LABEL_VARIANT))
        if why is None or not owned_by(obj, uid):
            continue
        try:
            await kube.delete(resource_path(kind.api_version, kind.plural, namespace, name))
        except KubeError as err:
            if refusals is None or server_busy(err) or err.namespace_terminating:
                raise
            refusals.append(_refused_delete(kind, namespace, name, why, err))
            continue
        emit("Normal", "Deleted", f"deleted {kind.kind} {name}: {why}{_removal_note(kind, obj)}")


def _refused_delete(kind: ChildKind, namespace: str, name: str, why: str, err: KubeError) -> str:
    message = f"{kind.kind} {name} stays although {why}: the API server refused its deletion: {err.message}"
    if kind == DEPLOYMENT:
        message += " (its replicas keep their GPUs, outside the pool's budget)"
    if forbidden(err):
        message += (
            f"; grant the operator `delete {kind.resource}` in namespace {namespace} (the chart's role "
            f"has it), or delete it by hand: kubectl -n {namespace} delete {kind.resource} {name}"
        )
    return message


def _removal_note(kind: ChildKind, obj: Obj) -> str:
    """What a deleted Deployment took with it: its ready replicas, which served until now."""
    if kind != DEPLOYMENT:
        return ""
    ready = int((obj.get("status") or {}).get("readyReplicas", 0) or 0)
    if ready == 0:
        return "; it had no ready replica"
    return (
        f"; its {ready} ready replica(s) no longer serve (to replace a variant without a gap, add the "
        "new one, wait for Ready, then remove the old one)"
    )
