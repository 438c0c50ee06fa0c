"""Level-based reconciliation of one ModelPool: read everything, converge, write status.

Every pass reads the pool and its children fresh, so a restart, a lost watch or
a child deleted by hand converges again on the next pass. Nothing is written
when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelpool.api import conditions as c
from modelpool.api.base import API_VERSION
from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, Variant
from modelpool.api.semantics import child_name_problems
from modelpool.builders.triton import (
    LABEL_POOL,
    LABEL_VARIANT,
    MANAGED_BY,
    build_deployment,
    build_service,
    is_subset,
)
from modelpool.controllers.pool_status import ChildIssues, ReplicaPlan, compute_status, rejected_status
from modelpool.kube import KubeClient, KubeError, Obj, resource_path

logger = logging.getLogger(__name__)

# (type, reason, message) -> posted as a Kubernetes Event on the pool.
EventSink = Callable[[str, str, str], None]
# Decides replicas per variant (the autoscaler plugs in here).
ReplicaPlanner = Callable[[ModelPoolSpec, ModelPoolStatus | None], Mapping[str, ReplicaPlan]]


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    plural: str
    kind: str


DEPLOYMENT = ChildKind("apps/v1", "deployments", "Deployment")
SERVICE = ChildKind("v1", "services", "Service")


def pool_path(namespace: str, name: str) -> str:
    return resource_path(API_VERSION, "modelpools", namespace, name)


def parse_status(raw: Any) -> ModelPoolStatus | None:
    """The stored status, or None when absent or unreadable (it is then rebuilt)."""
    if not raw:
        return None
    try:
        return ModelPoolStatus.model_validate(raw)
    except ValidationError:
        return None


def hold_or_minimum(spec: ModelPoolSpec, previous: ModelPoolStatus | None) -> dict[str, ReplicaPlan]:
    """Default planner: keep the last decision (clamped to min/max), else start at minReplicas."""
    last = {v.name: v for v in (previous.variants if previous else [])}
    plans = {}
    for variant in spec.variants:
        before = last.get(variant.name)
        if before is None:
            plans[variant.name] = ReplicaPlan(variant.min_replicas, "minReplicas (no decision yet)")
            continue
        replicas = min(max(before.desired_replicas, variant.min_replicas), variant.max_replicas)
        reason = (
            before.reason
            if replicas == before.desired_replicas
            else f"clamped to [{variant.min_replicas}, {variant.max_replicas}]"
        )
        plans[variant.name] = ReplicaPlan(replicas, reason or "held", before.capacity_shortfall_rps)
    return plans


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences", [])
    )


async def converge_child(
    kube: KubeClient, kind: ChildKind, manifest: Obj, uid: str, emit: EventSink, issues: ChildIssues
) -> Obj | None:
    """Create the child if missing, correct it if it drifted, leave it alone otherwise."""
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    path = resource_path(kind.api_version, kind.plural, namespace, name)
    live = await kube.get(path)
    if live is not None and not _owned_by(live, uid):
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
    emit("Normal", "Updated", f"updated {kind.kind} {name} to match the pool's spec")
    return corrected


async def prune_removed(
    kube: KubeClient, namespace: str, pool: str, uid: str, keep: set[str], emit: EventSink
) -> None:
    """Delete children of variants that are no longer in the spec (and only ours)."""
    selector = f"{LABEL_POOL}={pool},app.kubernetes.io/managed-by={MANAGED_BY}"
    for kind in (DEPLOYMENT, SERVICE):
        for obj in await kube.list(resource_path(kind.api_version, kind.plural, namespace), selector):
            variant = obj["metadata"].get("labels", {}).get(LABEL_VARIANT)
            if variant not in keep and _owned_by(obj, uid):
                await kube.delete(
                    resource_path(kind.api_version, kind.plural, namespace, obj["metadata"]["name"])
                )
                emit(
                    "Normal",
                    "Deleted",
                    f"deleted {kind.kind} {obj['metadata']['name']}: variant {variant} left the spec",
                )


async def write_status(
    kube: KubeClient, namespace: str, name: str, status: ModelPoolStatus, old: Any
) -> bool:
    wire = status.to_wire()
    if old == wire:
        return False
    await kube.merge_patch(pool_path(namespace, name) + "/status", {"status": wire})
    return True


async def reconcile_pool(
    kube: KubeClient,
    namespace: str,
    name: str,
    emit: EventSink,
    now: Callable[[], str] = c.now_rfc3339,
    planner: ReplicaPlanner = hold_or_minimum,
) -> ModelPoolStatus | None:
    """One pass over the pool; returns the status written (or kept), None if the pool is gone."""
    obj = await kube.get(pool_path(namespace, name))
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return None
    meta = obj["metadata"]
    generation = int(meta.get("generation", 0))
    uid = meta["uid"]
    raw_status = obj.get("status")
    previous = parse_status(raw_status)
    prev_conditions = previous.conditions if previous else []
    try:
        spec = ModelPoolSpec.model_validate(obj.get("spec", {}))
    except ValidationError as err:
        first = err.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']}; fix that field (children are left as they are)"
        status = rejected_status(generation, prev_conditions, "InvalidSpec", message, now(), previous)
        if await write_status(kube, namespace, name, status, raw_status):
            emit("Warning", "InvalidSpec", message)
        return status
    problems = child_name_problems(name, spec)
    if problems:
        message = "; ".join(f"{p.field}: {p.message}" for p in problems)
        status = rejected_status(generation, prev_conditions, problems[0].reason, message, now(), previous)
        if await write_status(kube, namespace, name, status, raw_status):
            emit("Warning", problems[0].reason, message)
        return status

    plans = planner(spec, previous)
    issues = ChildIssues()
    deployments: dict[str, Obj | None] = {}
    for variant in spec.variants:
        deployments[variant.name] = await _converge_variant(
            kube, namespace, name, uid, spec, variant, plans[variant.name].replicas, emit, issues
        )
    await prune_removed(kube, namespace, name, uid, {v.name for v in spec.variants}, emit)
    pods = await kube.list(resource_path("v1", "pods", namespace), f"{LABEL_POOL}={name}")
    status = compute_status(spec, generation, plans, deployments, pods, prev_conditions, issues, now())
    await write_status(kube, namespace, name, status, raw_status)
    return status


async def _converge_variant(
    kube: KubeClient,
    namespace: str,
    pool: str,
    uid: str,
    spec: ModelPoolSpec,
    variant: Variant,
    replicas: int,
    emit: EventSink,
    issues: ChildIssues,
) -> Obj | None:
    try:
        await converge_child(kube, SERVICE, build_service(pool, namespace, uid, variant), uid, emit, issues)
        return await converge_child(
            kube,
            DEPLOYMENT,
            build_deployment(pool, namespace, uid, spec, variant, replicas),
            uid,
            emit,
            issues,
        )
    except KubeError as err:
        # A rejected child (admission, quota, invalid image name...) is reported, not retried in a tight loop.
        issues.conflicts.append(f"variant {variant.name}: the API server refused a child: {err.message}")
        emit("Warning", "ChildRejected", f"variant {variant.name}: {err.message}")
        return None
