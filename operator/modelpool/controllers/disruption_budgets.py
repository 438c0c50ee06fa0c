"""The variants' PodDisruptionBudgets: built, applied, corrected and removed like the pool's other
children (:mod:`modelpool.controllers.children`), and reported in the pool's
``DisruptionBudgetApplied`` condition.

No watch follows them: an operator without access to PodDisruptionBudgets must still reconcile
everything else, and kopf waits for every watch it indexes before it reconciles anything. So they
are read with one LIST on the passes that list the other children from the API server (one per
resync period) and on a pass that sees a generation of the spec the condition has not seen yet (an
edit takes effect at once). A budget deleted or edited by hand is restored within a resync period.
A pass that does not read them keeps the condition as it was, so the status does not flap.

A budget of someone else's that already selects a variant's pods wins: the API server refuses to
evict a pod that two budgets select (every drain of its node would then stop at it), so the
variant gets none of ModelPool's while that one does (``OverlappingBudget``).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelpool.api import conditions as c
from modelpool.api.base import Condition, ConditionStatus
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders.triton import build_pod_disruption_budget, build_pod_template
from modelpool.controllers.backoff import forbidden, server_busy
from modelpool.controllers.children import (
    POD_DISRUPTION_BUDGET,
    EventSink,
    converge_child,
    owned_by,
    prune_children,
    selected_by_pool,
    with_kind,
)
from modelpool.controllers.label_selectors import selector_matches
from modelpool.controllers.pool_status import ChildIssues
from modelpool.kube import KubeClient, KubeError, Obj, resource_path
from modelpool.permissions import RULES

PDB_RULE = next(r for r in RULES if r.resource == POD_DISRUPTION_BUDGET.plural)
PERMISSION_FIX = (
    f"grant {', '.join(PDB_RULE.verbs)} on {PDB_RULE.name} to the operator's ServiceAccount (the "
    "chart's RBAC does), or set spec.disruptionBudget.enabled: false; the pool is reconciled without "
    "them meanwhile"
)


def budgets_due(conditions: Sequence[Condition], generation: int) -> bool:
    """Whether the condition has not yet seen this generation of the spec."""
    cond = c.find(conditions, c.DISRUPTION_BUDGET_APPLIED)
    return cond is None or cond.observed_generation != generation


async def reconcile_budgets(
    kube: KubeClient,
    namespace: str,
    pool: str,
    uid: str,
    spec: ModelPoolSpec,
    generation: int,
    conditions: Sequence[Condition],
    emit: EventSink,
    now: str,
    *,
    listing_pass: bool,
) -> list[Condition]:
    """Converge the budgets when this pass reads them (``listing_pass``, or a new generation), and
    return ``conditions`` with ``DisruptionBudgetApplied`` set; otherwise ``conditions`` as they are.

    A refusal is no failed pass: the Deployments and Services are reconciled all the same. A missing
    permission is ``PermissionMissing``, a same-named budget of someone else's ``ChildConflict``,
    anything else the API server refuses ``NotApplied``; each is one Warning Event (and log line)
    when it first shows, not one per pass."""
    if not (listing_pass or budgets_due(conditions, generation)):
        return list(conditions)
    try:
        status, reason, message = await _converge(kube, namespace, pool, uid, spec, emit)
    except KubeError as err:
        if err.namespace_terminating:
            return list(conditions)  # the pool goes with its namespace: nothing to report
        raise
    before = c.find(conditions, c.DISRUPTION_BUDGET_APPLIED)
    if status == "False" and (before is None or (before.reason, before.message) != (reason, message)):
        emit("Warning", reason, message)
    return c.set_condition(conditions, c.DISRUPTION_BUDGET_APPLIED, status, reason, message, generation, now)


async def _converge(
    kube: KubeClient, namespace: str, pool: str, uid: str, spec: ModelPoolSpec, emit: EventSink
) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of the condition after one pass over the budgets."""
    wanted: dict[str, Obj] = {}
    for variant in spec.variants:
        manifest = build_pod_disruption_budget(pool, namespace, uid, spec, variant)
        if manifest is not None:
            wanted[variant.name] = manifest
    try:  # every budget of the namespace: the pool's own, and any other that selects its pods
        every = await kube.list(
            resource_path(POD_DISRUPTION_BUDGET.api_version, POD_DISRUPTION_BUDGET.plural, namespace)
        )
    except KubeError as err:
        if not wanted and forbidden(err):
            return _off(spec)  # off, and nothing the operator may see to remove
        return _refused(err)
    listed = {
        o["metadata"]["name"]: with_kind(POD_DISRUPTION_BUDGET, o) for o in every if selected_by_pool(o, pool)
    }
    overlaps = _overlapping(pool, spec, [o for o in every if not owned_by(o, uid)], set(wanted))
    for name in overlaps:
        del wanted[name]
    issues = ChildIssues()
    refusals: list[KubeError] = []
    for manifest in wanted.values():
        try:
            await converge_child(kube, POD_DISRUPTION_BUDGET, manifest, uid, emit, issues, listed)
        except KubeError as err:
            _raise_unless_refused(err)
            refusals.append(err)
    names = {v.name for v in spec.variants}

    def unwanted(variant: str | None) -> str | None:
        if variant in wanted:
            return None
        if variant in overlaps:
            return f"PodDisruptionBudget {', '.join(overlaps[variant])} selects its pods"
        return "its disruptionBudget is off" if variant in names else f"variant {variant} left the spec"

    try:
        expected = {manifest["metadata"]["name"] for manifest in wanted.values()}
        await prune_children(kube, POD_DISRUPTION_BUDGET, namespace, uid, listed, unwanted, emit, expected)
    except KubeError as err:
        _raise_unless_refused(err)
        refusals.append(err)
    if refusals:
        return _refused(refusals[0])
    if issues.conflicts:
        return "False", "ChildConflict", "; ".join(issues.conflicts)
    if overlaps:
        return "False", "OverlappingBudget", _overlap_message(spec, overlaps)
    if not wanted:
        return _off(spec)
    budgets = ", ".join(
        f"{v.name} maxUnavailable {spec.disruption_budget_of(v).max_unavailable}"
        if v.name in wanted
        else f"{v.name} off"
        for v in spec.variants
    )
    return "True", "Applied", f"PodDisruptionBudgets: {budgets}"


def _overlapping(
    pool: str, spec: ModelPoolSpec, others: Sequence[Obj], variants: set[str]
) -> dict[str, list[str]]:
    """Variant -> the names of the budgets not the pool's that select its pods (those it has)."""
    found: dict[str, list[str]] = {}
    for variant in spec.variants:
        if variant.name not in variants:
            continue
        labels = build_pod_template(pool, spec, variant)["metadata"]["labels"]
        names = sorted(
            o["metadata"]["name"]
            for o in others
            if selector_matches((o.get("spec") or {}).get("selector"), labels)
        )
        if names:
            found[variant.name] = names
    return found


def _overlap_message(spec: ModelPoolSpec, overlaps: dict[str, list[str]]) -> str:
    index = {v.name: i for i, v in enumerate(spec.variants)}
    parts = [
        f"variant {name}: PodDisruptionBudget {', '.join(others)} already selects its pods, so ModelPool "
        f"keeps none of its own for it; delete or narrow {', '.join(others)} to use ModelPool's, or set "
        f"spec.variants[{index[name]}].disruptionBudget.enabled: false to keep yours"
        for name, others in overlaps.items()
    ]
    return (
        "; ".join(parts) + " (the API server refuses to evict a pod that two budgets select, which "
        "would stop every drain of its node)"
    )


def _raise_unless_refused(err: KubeError) -> None:
    """The API server away or the namespace going: the pass as a whole is retried or ends."""
    if server_busy(err) or err.namespace_terminating:
        raise err


def _refused(err: KubeError) -> tuple[ConditionStatus, str, str]:
    _raise_unless_refused(err)
    if forbidden(err):
        return "False", "PermissionMissing", f"{err.message}; {PERMISSION_FIX}"
    return "False", "NotApplied", f"the API server refused a PodDisruptionBudget: {err.message}"


def _off(spec: ModelPoolSpec) -> tuple[ConditionStatus, str, str]:
    where = (
        "spec.disruptionBudget" if not spec.disruption_budget.enabled else "every variant's disruptionBudget"
    )
    return (
        "True",
        "Disabled",
        f"{where} is off: no PodDisruptionBudgets, voluntary evictions (node drains) are not bounded",
    )
