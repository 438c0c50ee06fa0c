"""Pure computation of a ModelPool's status from its spec and its live children."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from modelpool.api import conditions as c
from modelpool.api.base import Condition
from modelpool.api.modelpool import ModelPoolSpec, ModelPoolStatus, ScalerMemory, Variant, VariantStatus
from modelpool.builders.triton import LABEL_VARIANT
from modelpool.controllers.pod_failures import (
    FAILURE_REASONS,
    container_failures,
    failure_message,
    failure_reason,
)

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class ReplicaPlan:
    """How many replicas a variant should run, and why."""

    replicas: int
    reason: str
    shortfall_rps: int = 0
    memory: ScalerMemory | None = None


def plan_floor(variant: Variant, replicas: int) -> int:
    """The floor of ``variant`` planned at ``replicas``: its minReplicas, or 0 for a
    ``scaleToZero`` variant planned at 0 (as ``decide`` floors an idle one)."""
    return 0 if replicas == 0 and variant.scaling.scale_to_zero else variant.min_replicas


def hold(variant: Variant, before: ReplicaPlan) -> ReplicaPlan:
    """``before`` kept for ``variant`` between decisions, clamped to its [minReplicas, maxReplicas]
    (which the spec may have changed since). A decision of 0 for a ``scaleToZero`` variant (an idle
    tier scaled to zero) stays 0: clamped up to minReplicas, the tier went 0 -> 1 -> 0 at every
    decision. The last tier serving is kept by the caller (``scaling_planner.serving_plans``)."""
    replicas = min(max(before.replicas, plan_floor(variant, before.replicas)), variant.max_replicas)
    if replicas != before.replicas:
        return replace(
            before, replicas=replicas, reason=f"clamped to [{variant.min_replicas}, {variant.max_replicas}]"
        )
    return replace(before, reason=before.reason or "held")


@dataclass(frozen=True)
class ChildIssues:
    """Problems met while converging children, reported in conditions."""

    conflicts: list[str] = field(default_factory=list)
    """Children of the pool's names that the pool does not own (never taken over)."""
    rejected: list[str] = field(default_factory=list)
    """Child writes the API server refused (admission, quota, validation, a failing webhook)."""
    prune_refused: list[str] = field(default_factory=list)
    """Children of variants that left the spec that the API server would not delete."""

    @property
    def unwritten(self) -> bool:
        """Whether a child the spec wants may not be what it says."""
        return bool(self.conflicts or self.rejected)


def _pod_active(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") and not pod.get(
        "metadata", {}
    ).get("deletionTimestamp")


SPREAD_REFUSAL = "didn't match pod topology spread constraints"
"""The scheduler's words for nodes a DoNotSchedule spread keeps a pod off."""
SPREAD_HINT = (
    "the topology spread (whenUnsatisfiable: DoNotSchedule) keeps it off the nodes that have room: "
    "set spec.topologySpread.whenUnsatisfiable to ScheduleAnyway, raise its maxSkew, or add nodes "
    "in another domain"
)


def unschedulable_message(pod: Obj) -> str | None:
    """The scheduler's message when a pod cannot be placed, else None."""
    for cond in pod.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "Unschedulable")
    return None


def _variant_pods(pods: Sequence[Obj], variant: str) -> list[Obj]:
    return [p for p in pods if p.get("metadata", {}).get("labels", {}).get(LABEL_VARIANT) == variant]


REPLICA_FAILURE = "ReplicaFailure"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
WORKLOAD_REASONS = (REPLICA_FAILURE, PROGRESS_DEADLINE_EXCEEDED)
"""Degraded's reasons read from the variants' Deployments (each a Warning Event when it shows)."""


def _deployment_condition(dep: Obj, type_: str) -> Obj | None:
    """The Deployment's condition ``type_`` when its status describes its current spec."""
    status = dep.get("status") or {}
    generation = int((dep.get("metadata") or {}).get("generation", 0) or 0)
    if int(status.get("observedGeneration", 0) or 0) < generation:
        return None  # the Deployment controller has not seen the spec yet: its conditions are older
    return next((cond for cond in status.get("conditions") or [] if cond.get("type") == type_), None)


def replica_failure(dep: Obj) -> str | None:
    """Why the Deployment's ReplicaSet cannot create pods (the API server's words), else None."""
    cond = _deployment_condition(dep, "ReplicaFailure")
    if cond is None or cond.get("status") != "True":
        return None
    return str(cond.get("message") or cond.get("reason") or "FailedCreate")


def progress_deadline_exceeded(dep: Obj) -> str | None:
    """The Deployment controller's message when the rollout passed progressDeadlineSeconds, else None."""
    cond = _deployment_condition(dep, "Progressing")
    if cond is None or cond.get("status") != "False" or cond.get("reason") != PROGRESS_DEADLINE_EXCEEDED:
        return None
    return str(cond.get("message") or PROGRESS_DEADLINE_EXCEEDED)


def replica_failure_hint(message: str, variant: str) -> str:
    """What to change for a pod of ``variant`` the API server refuses to create (``message``: its
    words)."""
    if "exceeded quota" in message:
        return (
            "a ResourceQuota of the namespace refuses the pods (kubectl describe resourcequota): raise it, "
            "or lower the pool's gpuBudget/maxReplicas to fit it"
        )
    if "violates PodSecurity" in message:
        return (
            "the namespace's PodSecurity admission (label pod-security.kubernetes.io/enforce) refuses the "
            f"pod: set spec.variants[].triton.securityContext of variant {variant} to what the level "
            "requires (restricted: runAsNonRoot: true with a non-root runAsUser, e.g. 1000, the Triton "
            "image's user), or set the namespace to a level that admits it"
        )
    if "per Container" in message or "per Pod" in message or "LimitRange" in message:
        return (
            "a LimitRange of the namespace refuses the pod's resources (kubectl describe limitrange): set "
            "the variant's resources within it, or change the LimitRange"
        )
    return "the ReplicaSet's Events say more (kubectl describe replicaset -l modelpool.dev/variant=<variant>)"


def workload_problems(spec: ModelPoolSpec, deployments: Mapping[str, Obj | None]) -> dict[str, str]:
    """Degraded's messages by reason (:data:`WORKLOAD_REASONS`) from the variants' Deployments."""
    failures: list[str] = []
    stalled: list[str] = []
    for variant in spec.variants:
        dep = deployments.get(variant.name) or {}
        if (failure := replica_failure(dep)) is not None:
            failures.append(
                f"variant {variant.name}: its ReplicaSet cannot create pods: {failure}; "
                f"{replica_failure_hint(failure, variant.name)}"
            )
        if (deadline := progress_deadline_exceeded(dep)) is not None:
            stalled.append(
                f"variant {variant.name}: its rollout made no progress within the Deployment's "
                f"progressDeadlineSeconds: {deadline} (the rollout goes on; what holds its new pods back "
                "is named here or in their Events)"
            )
    found = {REPLICA_FAILURE: "; ".join(failures), PROGRESS_DEADLINE_EXCEEDED: "; ".join(stalled)}
    return {reason: message for reason, message in found.items() if message}


def surge_hint(variant: Variant, dep: Obj, resource: str) -> str:
    """For a variant whose pod waits for GPUs: what its rollout needs, while one is in progress
    (old replicas still counted in the Deployment's), else ""."""
    status = dep.get("status") or {}
    if int(status.get("replicas", 0) or 0) <= int(status.get("updatedReplicas", 0) or 0):
        return ""
    return (
        f"; a rollout of variant {variant.name} is in progress: it surges one replica at a time "
        f"(maxSurge 1, maxUnavailable 0), so its new pod needs {variant.gpus_per_replica} {resource} "
        "free on one node while the old replicas keep serving; free them for the rollout (add a node, "
        "or lower maxReplicas of a lower-priority variant or pool)"
    )


def _gpu_short(message: str, resource: str) -> bool:
    """The scheduler refused a pod for want of GPUs (not for a spread that keeps it off the nodes
    with free GPUs, which Degraded reports)."""
    return resource in message and SPREAD_REFUSAL not in message


@dataclass(frozen=True)
class SharedGpuPool:
    """What the other ModelPools on this pool's shared GPU pool (``spec.gpuPool.name``) bring to
    its budget condition: the smallest budget any member declares and their minimums' GPUs."""

    budget: int
    others_min_gpus: int


def compute_status(
    spec: ModelPoolSpec,
    generation: int,
    plans: Mapping[str, ReplicaPlan],
    deployments: Mapping[str, Obj | None],
    pods: Sequence[Obj],
    previous: Sequence[Condition],
    issues: ChildIssues,
    now: str,
    shared: SharedGpuPool | None = None,
) -> ModelPoolStatus:
    """Status for ``spec`` given the live Deployments (by variant) and the pool's pods."""
    variants: list[VariantStatus] = []
    gpus_in_use = 0
    not_ready: list[str] = []
    rolling: list[str] = []
    unschedulable: list[str] = []
    surges: list[str] = []
    quota_refusals: list[str] = []
    resource = spec.gpu_pool.resource_name
    for variant in spec.variants:
        plan = plans[variant.name]
        dep = deployments.get(variant.name) or {}
        dep_status = dep.get("status", {}) or {}
        ready = int(dep_status.get("readyReplicas", 0) or 0)
        updated = int(dep_status.get("updatedReplicas", 0) or 0)
        observed = int(dep_status.get("observedGeneration", 0) or 0)
        dep_generation = int(dep.get("metadata", {}).get("generation", 0) or 0)
        active = [p for p in _variant_pods(pods, variant.name) if _pod_active(p)]
        scheduled = [p for p in active if p.get("spec", {}).get("nodeName")]
        gpus = len(scheduled) * variant.gpus_per_replica
        gpus_in_use += gpus
        waiting = [(pod, msg) for pod in active if (msg := unschedulable_message(pod)) is not None]
        unschedulable += [f"{pod['metadata']['name']}: {msg}" for pod, msg in waiting]
        if any(_gpu_short(msg, resource) for _, msg in waiting):
            surges.append(surge_hint(variant, dep, resource))
        failure = replica_failure(dep)
        if failure is not None and "exceeded quota" in failure and resource in failure:
            quota_refusals.append(f"variant {variant.name}: {failure}")
        if ready < plan.replicas:
            cannot = " (pods cannot be created: Degraded)" if failure is not None else ""
            not_ready.append(f"{variant.name} {ready}/{plan.replicas}{cannot}")
        if not dep or observed < dep_generation or updated < plan.replicas or len(active) != plan.replicas:
            rolling.append(variant.name)
        variants.append(
            VariantStatus(
                name=variant.name,
                tier=variant.tier,
                desired_replicas=plan.replicas,
                ready_replicas=ready,
                gpus=gpus,
                reason=plan.reason,
                capacity_shortfall_rps=plan.shortfall_rps,
                scaler=plan.memory,
            )
        )

    conds = list(previous)

    def put(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, type_, "True" if status else "False", reason, message, generation, now)

    put(c.ACCEPTED, True, "Valid", "spec is valid")
    budget = spec.gpu_pool.gpu_budget
    min_gpus = sum(v.min_replicas * v.gpus_per_replica for v in spec.variants)
    whose = "all variants"
    if shared is not None and spec.gpu_pool.name:
        budget = min(budget, shared.budget)
        min_gpus += shared.others_min_gpus
        whose = f"all variants of the pools sharing GPU pool {spec.gpu_pool.name!r}"
    requested = sum(plans[v.name].replicas * v.gpus_per_replica for v in spec.variants)
    # A pod the spread keeps off the nodes with free GPUs is not short of GPUs: said in Degraded.
    gpu_unschedulable = [m for m in unschedulable if _gpu_short(m, resource)]
    if min_gpus > budget:
        put(
            c.GPU_BUDGET_FITS,
            False,
            "MinReplicasExceedBudget",
            f"minReplicas of {whose} need {min_gpus} GPUs but spec.gpuPool.gpuBudget is {budget}; "
            "raise gpuBudget or lower minReplicas (minimums are kept regardless)",
        )
    elif requested > budget:
        # A scaling decision never grants more than the budget beyond the minimums: these are
        # replicas kept from before the budget was lowered (or the pool joined a shared GPU pool).
        put(
            c.GPU_BUDGET_FITS,
            False,
            "HeldAboveBudget",
            f"replicas kept from an earlier decision request {requested} GPUs but the budget is {budget} "
            f"(minReplicas of {whose} need {min_gpus}); the next scaling decision cuts them to the budget, "
            "never below minReplicas (while none is made, MetricsAvailable says why, they are kept)",
        )
    elif quota_refusals:
        put(
            c.GPU_BUDGET_FITS,
            False,
            "GPUQuotaExceeded",
            f"a ResourceQuota of the namespace refuses {resource} the budget allows ({requested} of "
            f"{budget} GPUs requested): {'; '.join(quota_refusals)}; raise the quota to the budget, or lower "
            "gpuBudget to what the quota leaves (the scaler plans within gpuBudget, not the quota)",
        )
    elif gpu_unschedulable:
        put(
            c.GPU_BUDGET_FITS,
            False,
            "InsufficientNodeGPUs",
            f"{len(gpu_unschedulable)} replica(s) cannot be scheduled for lack of "
            f"{resource} on the pool's nodes: {gpu_unschedulable[0]}; add GPU nodes "
            f"or lower gpuBudget/maxReplicas{''.join(surges)}",
        )
    else:
        gpu_pool = spec.gpu_pool.name
        where = ""
        if gpu_pool:
            where = f" shared in GPU pool {gpu_pool!r} (the other pools' part: MetricsAvailable)"
            if budget < spec.gpu_pool.gpu_budget:
                where += (
                    f"; this pool declares gpuBudget {spec.gpu_pool.gpu_budget}, another pool on it less, "
                    "and the smallest applies"
                )
        put(c.GPU_BUDGET_FITS, True, "Fits", f"{requested} of {budget} GPUs{where} requested")

    problems: list[tuple[str, str]] = []
    if issues.conflicts:
        problems.append(("ChildConflict", "; ".join(issues.conflicts)))
    if issues.rejected:
        problems.append(("ChildRejected", "; ".join(issues.rejected)))
    workload = workload_problems(spec, deployments)
    if REPLICA_FAILURE in workload:
        problems.append((REPLICA_FAILURE, workload[REPLICA_FAILURE]))
    failing = container_problem(spec, pods)
    if failing is not None:
        problems.append(failing)
    if unschedulable:
        pending = f"{len(unschedulable)} pod(s) pending: {unschedulable[0]}"
        if any(SPREAD_REFUSAL in m for m in unschedulable):
            pending += f"; {SPREAD_HINT}"
        problems.append(("PodsUnschedulable", pending))
    if PROGRESS_DEADLINE_EXCEEDED in workload:  # after what stalls a rollout, which it follows from
        problems.append((PROGRESS_DEADLINE_EXCEEDED, workload[PROGRESS_DEADLINE_EXCEEDED]))
    if issues.prune_refused:
        problems.append(("PruneFailed", "; ".join(issues.prune_refused)))
    if problems:
        put(c.DEGRADED, True, problems[0][0], degraded_message(problems))
    else:
        put(c.DEGRADED, False, "AsExpected", "no problems observed")

    if rolling:
        put(c.PROGRESSING, True, "RollingOut", f"converging variants {', '.join(rolling)}")
    else:
        put(c.PROGRESSING, False, "Stable", "every variant runs its desired replicas")

    if not_ready or issues.unwritten:
        parts = [f"ready/desired: {', '.join(not_ready)}"] if not_ready else []
        if issues.unwritten:
            parts.append("a child the spec wants was not written (Degraded says why)")
        put(c.READY, False, "ReplicasNotReady", "; ".join(parts))
    else:
        put(c.READY, True, "AllReplicasReady", "all variants have their desired replicas ready")

    return ModelPoolStatus(
        observed_generation=generation,
        gpu_budget=budget,
        gpus_requested=requested,
        gpus_in_use=gpus_in_use,
        variants=variants,
        conditions=conds,
    )


def container_problem(spec: ModelPoolSpec, pods: Sequence[Obj]) -> tuple[str, str] | None:
    """(reason, message) for the failing containers of the variants' active pods, else None."""
    failures = [
        failure
        for variant in spec.variants
        for failure in container_failures(
            variant.name, [p for p in _variant_pods(pods, variant.name) if _pod_active(p)]
        )
    ]
    if not failures:
        return None
    index = {v.name: i for i, v in enumerate(spec.variants)}
    return failure_reason(failures), failure_message(failures, index)


def degraded_message(problems: Sequence[tuple[str, str]]) -> str:
    """Degraded's message for (reason, message) problems, the first the condition's reason: every
    message, each after the first behind its reason (``...; ContainersCrashing: 1 pod(s) failing:
    ...``), so a later pass can tell which kinds were reported (:func:`reported_failure`)."""
    (_, first), *others = problems
    return "; ".join([first, *(f"{reason}: {message}" for reason, message in others)])


def reported_reasons(conditions: Sequence[Condition], reasons: Sequence[str]) -> set[str]:
    """Those of ``reasons`` a True Degraded condition reports, as its reason or behind another one."""
    degraded = c.find(conditions, c.DEGRADED)
    if degraded is None or degraded.status != "True":
        return set()
    return {r for r in reasons if r == degraded.reason or f"; {r}: " in degraded.message}


def reported_failure(conditions: Sequence[Condition]) -> str | None:
    """The container-failure reason a True Degraded condition reports, as its reason or behind
    another one (a ChildConflict leads), else None."""
    degraded = c.find(conditions, c.DEGRADED)
    if degraded is None or degraded.status != "True":
        return None
    if degraded.reason in FAILURE_REASONS:
        return degraded.reason
    return next((r for r in FAILURE_REASONS if f"; {r}: " in degraded.message), None)


def rejected_status(
    generation: int,
    previous: Sequence[Condition],
    reason: str,
    message: str,
    now: str,
    old: ModelPoolStatus | None,
) -> ModelPoolStatus:
    """Status for a spec the operator will not act on: children are left exactly as they are."""
    conds = c.set_condition(previous, c.ACCEPTED, "False", reason, message, generation, now)
    conds = c.set_condition(conds, c.READY, "False", reason, message, generation, now)
    base = old or ModelPoolStatus()
    return base.model_copy(update={"observed_generation": generation, "conditions": conds})


MEMORY_REFRESH_SECONDS = 10.0
"""How old the stored reasons and scaler memory may grow while nothing else in the status moves."""
_VOLATILE = ("reason", "scaler")


def _steady_part(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The status without what every decision rewrites (each variant's reason and scaler memory)."""
    variants = [{k: v for k, v in one.items() if k not in _VOLATILE} for one in wire.get("variants", [])]
    return {**wire, "variants": variants}


def _decided_at(wire: Mapping[str, Any]) -> float | None:
    times = [v["scaler"]["decidedAt"] for v in wire.get("variants", []) if v.get("scaler")]
    return max(times) if times else None


def status_write_due(status: ModelPoolStatus, stored: Any, refresh_s: float = MEMORY_REFRESH_SECONDS) -> bool:
    """Whether a pass must write the pool's status.

    What anyone acts on (replicas, GPUs, conditions, shortfalls, the observed generation) is written
    as soon as it changes. Each variant's reason and scaler memory change with every decision (they
    carry the live demand and the decision's time); when nothing else moved they are written once
    the stored memory is ``refresh_s`` old. At one decision a second that is one write in ten
    instead of every decision; an operator restart then loses at most ``refresh_s`` of the memory.
    """
    wire = status.to_wire()
    if wire == stored:
        return False
    if not isinstance(stored, Mapping) or _steady_part(wire) != _steady_part(stored):
        return True
    new, old = _decided_at(wire), _decided_at(stored)
    return new is None or old is None or new - old >= refresh_s
