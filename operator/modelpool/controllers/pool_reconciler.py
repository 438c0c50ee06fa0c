"""Level-based reconciliation of one ModelPool: read everything, converge, write status.

Every pass reads the pool fresh and its children from the API server or from the operator's
watch cache, so a restart, a lost watch or a child deleted by hand converges again on the next
pass. Nothing is written when nothing changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from modelpool.api import conditions as c
from modelpool.api.base import API_VERSION, Condition, field_errors, was_shortened
from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, Variant
from modelpool.api.semantics import child_name_problems
from modelpool.builders.triton import build_deployment, build_service, child_name
from modelpool.controllers.backoff import server_busy
from modelpool.controllers.children import (
    DEPLOYMENT,
    SERVICE,
    ChildKind,
    EventSink,
    converge_child,
    list_children,
    pool_selector,
    prune_children,
    with_kind,
)
from modelpool.controllers.disruption_budgets import reconcile_budgets
from modelpool.controllers.pool_status import (
    WORKLOAD_REASONS,
    ChildIssues,
    ReplicaPlan,
    compute_status,
    container_problem,
    hold,
    rejected_status,
    reported_failure,
    reported_reasons,
    status_write_due,
    workload_problems,
)
from modelpool.controllers.profiles import load_profiles, profile_condition
from modelpool.controllers.routed_slo import load_routed_latency_slo_s
from modelpool.controllers.scaling_planner import ScalingOutcome, ScalingPlanner
from modelpool.controllers.status_io import parse_stored, write_status
from modelpool.kube import KubeClient, KubeError, Obj, resource_path

logger = logging.getLogger(__name__)

__all__ = [
    "DEPLOYMENT",
    "SERVICE",
    "ApiChildReader",
    "CachedChildReader",
    "ChildReader",
    "EventSink",
    "PoolPass",
    "RefreshingChildReader",
    "hold_or_minimum",
    "parse_status",
    "pool_path",
    "prune_removed",
    "reconcile_pool",
]


def pool_path(namespace: str, name: str) -> str:
    return resource_path(API_VERSION, "modelpools", namespace, name)


def parse_status(raw: Any) -> ModelPoolStatus | None:
    """The pool's stored status, or None when absent or unreadable."""
    return parse_stored(ModelPoolStatus, raw)


def hold_or_minimum(spec: ModelPoolSpec, previous: ModelPoolStatus | None) -> dict[str, ReplicaPlan]:
    """Default planner: keep the last decision (clamped to min/max), else start at minReplicas."""
    last = {v.name: v for v in (previous.variants if previous else [])}
    plans = {}
    for variant in spec.variants:
        before = last.get(variant.name)
        if before is None:
            plans[variant.name] = ReplicaPlan(variant.min_replicas, "minReplicas (no decision yet)")
            continue
        stored = ReplicaPlan(
            before.desired_replicas, before.reason, before.capacity_shortfall_rps, memory=before.scaler
        )
        plans[variant.name] = hold(variant, stored)
    return plans


class ChildReader(Protocol):
    """Where a pass reads the pool's children from: the API server, or the operator's watch cache."""

    @property
    def from_api_server(self) -> bool:
        """Whether the children come from a LIST of the API server rather than a watch cache: the
        pass then also reads (and corrects) what no watch follows, the PodDisruptionBudgets."""
        ...

    async def children(self) -> dict[str, dict[str, Obj]]:
        """The pool's Deployments and Services by kind and name."""
        ...

    async def pods(self) -> list[Obj]:
        """The pool's pods."""
        ...


@dataclass(frozen=True)
class ApiChildReader:
    """One LIST per kind per pass."""

    kube: KubeClient
    namespace: str
    pool: str

    @property
    def from_api_server(self) -> bool:
        return True

    async def children(self) -> dict[str, dict[str, Obj]]:
        return {
            kind.kind: await list_children(self.kube, kind, self.namespace, self.pool)
            for kind in (DEPLOYMENT, SERVICE)
        }

    async def pods(self) -> list[Obj]:
        return await self.kube.list(resource_path("v1", "pods", self.namespace), pool_selector(self.pool))


@dataclass(frozen=True)
class CachedChildReader:
    """The pool's children as the operator's watches last saw them (kopf indexes), read without a
    request: at one decision a second a pass then costs the API server one GET of the pool instead
    of a GET and three LISTs. The watches are the ones that wake the pool on a child's change, so
    a child this pass sees is at most one watch event old. A stale read costs at most one
    server-side apply that changes nothing, or, for a child deleted while a watch was broken, the
    wait for the next listing pass (:class:`RefreshingChildReader`)."""

    deployments: Callable[[], Iterable[Obj]]
    services: Callable[[], Iterable[Obj]]
    pod_list: Callable[[], Iterable[Obj]]

    @property
    def from_api_server(self) -> bool:
        return False

    async def children(self) -> dict[str, dict[str, Obj]]:
        return {
            DEPLOYMENT.kind: {o["metadata"]["name"]: with_kind(DEPLOYMENT, o) for o in self.deployments()},
            SERVICE.kind: {o["metadata"]["name"]: with_kind(SERVICE, o) for o in self.services()},
        }

    async def pods(self) -> list[Obj]:
        return list(self.pod_list())


@dataclass
class RefreshingChildReader:
    """The watch cache for most passes, the API server for one pass in every ``every_s``.

    kopf re-lists after a broken watch but keeps in its indexes what it saw before, so a child
    deleted while the watch was down could linger in the cache; a pass that lists from the API
    server at least once per resync period bounds that to one period, as for a missed event.
    """

    api: ChildReader
    cache: ChildReader
    every_s: float
    clock: Callable[[], float] = time.monotonic
    listed_at: float = float("-inf")

    def for_pass(self) -> ChildReader:
        now = self.clock()
        if now - self.listed_at >= self.every_s:
            self.listed_at = now
            return self.api
        return self.cache

    def relist(self) -> None:
        """After a failed pass (the API server away, the watches likely broken too): the next pass
        lists from the API server, as the listing of this one may not have happened."""
        self.listed_at = float("-inf")


async def prune_removed(
    kube: KubeClient,
    namespace: str,
    uid: str,
    keep: set[str],
    emit: EventSink,
    children: Mapping[str, Mapping[str, Obj]],
    pool: str,
    refusals: list[str] | None = None,
) -> None:
    """Delete the Deployments and Services of variants no longer in the spec (and only ours).

    A child named as the child of a variant in ``keep`` is never deleted, whatever its variant
    label (see :func:`prune_children`). A delete the API server refuses (``delete`` is a permission
    the operator works without) is added to ``refusals`` when given, and the others go on."""

    def unwanted(variant: str | None) -> str | None:
        return None if variant in keep else f"variant {variant} left the spec"

    expected = {child_name(pool, variant) for variant in keep}
    for kind in (DEPLOYMENT, SERVICE):
        await prune_children(
            kube, kind, namespace, uid, children[kind.kind], unwanted, emit, expected, refusals
        )


@dataclass(frozen=True)
class PoolPass:
    """The result of one reconcile pass: the status written and when to look again."""

    status: ModelPoolStatus
    next_in: float | None = None


async def reconcile_pool(
    kube: KubeClient,
    namespace: str,
    name: str,
    emit: EventSink,
    now: Callable[[], str] = c.now_rfc3339,
    planner: ScalingPlanner | None = None,
    routed_latency_slo: Callable[[], Awaitable[float | None]] | None = None,
    child_reader: ChildReader | None = None,
) -> PoolPass | None:
    """One pass over the pool; None when the pool is gone.

    ``routed_latency_slo`` gives the RoutingPolicies' latency SLO for the pool (the operator reads
    its index); without it a decision that needs it lists the namespace's RoutingPolicies.
    ``child_reader`` is where the children come from (the operator's watch cache); without it,
    one LIST per kind.
    """
    obj = await kube.get(pool_path(namespace, name))
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        if planner is not None:
            planner.forget(namespace, name)
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
        message = f"{field_errors(err, 'spec')}; fix that field (children are left as they are)"
        status = rejected_status(generation, prev_conditions, "InvalidSpec", message, now(), previous)
        if await write_status(kube, pool_path(namespace, name), status, raw_status):
            emit("Warning", "InvalidSpec", message)
        return PoolPass(status)
    problems = child_name_problems(name, spec)
    if problems:
        message = "; ".join(f"{p.field}: {p.message}" for p in problems)
        status = rejected_status(generation, prev_conditions, problems[0].reason, message, now(), previous)
        if await write_status(kube, pool_path(namespace, name), status, raw_status):
            emit("Warning", problems[0].reason, message)
        return PoolPass(status)

    reader = child_reader or ApiChildReader(kube, namespace, name)
    children = await reader.children()
    existing = {
        variant.name: dep
        for variant in spec.variants
        if (dep := children[DEPLOYMENT.kind].get(child_name(name, variant.name))) is not None
    }
    current = {v: int(dep["spec"].get("replicas", 0)) for v, dep in existing.items()}
    ready = {v: int((dep.get("status") or {}).get("readyReplicas", 0)) for v, dep in existing.items()}
    held = hold_or_minimum(spec, previous)
    profiles = await load_profiles(kube, namespace, spec)
    outcome = (
        await planner.plan(
            namespace,
            name,
            spec,
            previous,
            current,
            held,
            profiles.capacity_rps,
            ready=ready,
            routed_latency_slo=routed_latency_slo
            or (lambda: load_routed_latency_slo_s(kube, namespace, name)),
        )
        if planner is not None
        else ScalingOutcome(held, None)
    )
    for line in outcome.scaled:
        emit("Normal", "Scaled", line)

    issues = ChildIssues()
    deployments: dict[str, Obj | None] = {}
    for variant in spec.variants:
        deployments[variant.name] = await _converge_variant(
            kube,
            namespace,
            name,
            uid,
            spec,
            variant,
            outcome.plans[variant.name].replicas,
            emit,
            issues,
            children,
        )
    await prune_removed(
        kube, namespace, uid, {v.name for v in spec.variants}, emit, children, name, issues.prune_refused
    )
    conditions = await reconcile_budgets(
        kube,
        namespace,
        name,
        uid,
        spec,
        generation,
        prev_conditions,
        emit,
        now(),
        listing_pass=reader.from_api_server,
    )
    pods = await reader.pods()
    if outcome.metrics is not None:
        note = outcome.metrics
        conditions = c.set_condition(
            conditions,
            c.METRICS_AVAILABLE,
            "True" if note.ok else "False",
            note.reason,
            note.message,
            generation,
            now(),
        )
    profile_note = profile_condition(profiles)
    if profile_note is None:  # no variant references a profile (any more): nothing to report on
        conditions = c.remove_condition(conditions, c.PROFILES_CURRENT)
    else:
        ok, reason, message = profile_note
        conditions = c.set_condition(
            conditions, c.PROFILES_CURRENT, "True" if ok else "False", reason, message, generation, now()
        )
    shared = planner.shared_gpu_pool(namespace, name, spec) if planner is not None else None
    status = compute_status(
        spec, generation, outcome.plans, deployments, pods, conditions, issues, now(), shared
    )
    if status_write_due(status, raw_status):
        await write_status(kube, pool_path(namespace, name), status, raw_status)
    _report_rejections(issues, prev_conditions, emit)
    _report_failures(container_problem(spec, pods), prev_conditions, emit)
    _report_workload(workload_problems(spec, deployments), prev_conditions, emit)
    return PoolPass(status, outcome.next_decision_in)


def _report_failures(
    failure: tuple[str, str] | None, prev_conditions: list[Condition], emit: EventSink
) -> None:
    """A Warning Event when containers start failing, or fail in another way (``failure``: their
    reason and message): once per change, not once per pass while they keep failing, and whatever
    reason Degraded leads with (a ChildConflict at the same time names them only in its message)."""
    if failure is not None and failure[0] != reported_failure(prev_conditions):
        emit("Warning", *failure)


def _report_workload(problems: Mapping[str, str], prev_conditions: list[Condition], emit: EventSink) -> None:
    """A Warning Event when the variants' Deployments start to say that pods cannot be created or
    a rollout is past its deadline (``problems``, by reason): once per change, not once per pass,
    whatever reason Degraded leads with."""
    reported = reported_reasons(prev_conditions, WORKLOAD_REASONS)
    for reason, message in problems.items():
        if reason not in reported:
            emit("Warning", reason, message)


def _report_rejections(issues: ChildIssues, prev_conditions: list[Condition], emit: EventSink) -> None:
    """A Warning Event per refused child write or delete the pool's Degraded condition did not
    already report: a refusal that lasts (a quota, an admission webhook, a missing permission) is
    one Event and log line, not one per pass (at ``intervalSeconds: 1``, one a second)."""
    degraded = c.find(prev_conditions, c.DEGRADED)
    reported = degraded.message if degraded is not None and c.is_true(prev_conditions, c.DEGRADED) else ""
    # A message cut at the condition's maximum length (shorten's marker at its end) lost the
    # refusals past the cut: those of a kind it reports count as reported, or each would be
    # posted again at every pass.
    kinds = (
        reported_reasons(prev_conditions, ("ChildRejected", "PruneFailed"))
        if was_shortened(reported)
        else set()
    )
    for reason, messages in (("ChildRejected", issues.rejected), ("PruneFailed", issues.prune_refused)):
        for message in messages:
            if message not in reported and reason not in kinds:
                emit("Warning", reason, message)


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
    children: Mapping[str, Mapping[str, Obj]],
) -> Obj | None:
    """Converge the variant's Service, then its Deployment (a refused Service does not keep the
    Deployment from its scale or spec); the Deployment as it now is, for the status."""
    service = build_service(pool, namespace, uid, variant)
    await _converge_reported(kube, SERVICE, service, uid, emit, issues, children[SERVICE.kind], variant)
    deployment = build_deployment(pool, namespace, uid, spec, variant, replicas)
    return await _converge_reported(
        kube, DEPLOYMENT, deployment, uid, emit, issues, children[DEPLOYMENT.kind], variant
    )


async def _converge_reported(
    kube: KubeClient,
    kind: ChildKind,
    manifest: Obj,
    uid: str,
    emit: EventSink,
    issues: ChildIssues,
    listed: Mapping[str, Obj],
    variant: Variant,
) -> Obj | None:
    """:func:`converge_child`, with a refused write reported in ``issues`` rather than raised.

    After a refusal the child is taken as listed, which is what runs: a write refused once (a
    500 from a timed-out etcd, which a failing admission webhook answers too) must not make the
    status say that the replicas serving untouched are gone."""
    try:
        return await converge_child(kube, kind, manifest, uid, emit, issues, listed)
    except KubeError as err:
        if err.namespace_terminating:
            return None  # the pool goes with its namespace: nothing to report
        if server_busy(err):
            raise  # the API server restarting or overloaded: the whole pass is retried, nothing refused
        # A rejected child (admission, quota, invalid image name...) is reported, not retried in a tight loop.
        name = manifest["metadata"]["name"]
        issues.rejected.append(
            f"variant {variant.name}: the API server refused {kind.kind} {name} "
            f"({err.status} {err.reason}): {err.message}"
        )
        return listed.get(name)
