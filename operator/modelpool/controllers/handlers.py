"""kopf handlers: thin shells that wake one reconcile loop per pool.

Each ModelPool gets a daemon that runs :func:`reconcile_pool` whenever the pool
or one of its children changes (watch events only *wake* the loop) and at
least every ``RESYNC_SECONDS``, so it is level-based: a missed event costs at
most one resync period.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import kopf

from modelpool.api.base import GROUP, VERSION
from modelpool.builders.triton import LABEL_POOL, MANAGED_BY
from modelpool.controllers.backoff import FailureStreak, api_unavailable, forbidden, report_due
from modelpool.controllers.kopf_login import Relogins, kopf_session
from modelpool.controllers.policy_reconciler import reconcile_policy
from modelpool.controllers.pool_reconciler import (
    ApiChildReader,
    CachedChildReader,
    EventSink,
    RefreshingChildReader,
    reconcile_pool,
)
from modelpool.controllers.routed_slo import policy_latency_slo_ms, smallest_slo_s
from modelpool.controllers.router_push import PUSH_TIMEOUT_SECONDS
from modelpool.controllers.scaling_planner import GpuPoolMember, ScalingPlanner, gpu_pool_member
from modelpool.controllers.triggers import GenerationFilter, Triggers
from modelpool.kube import KubeClient, Obj
from modelpool.kubeauth import EXEC_RETRY_S
from modelpool.kubelogin import Credentials, load_credentials
from modelpool.scaling.metrics import (
    forget_conditions,
    forget_policy_objectives,
    observe_reconcile,
    record_conditions,
)

RESYNC_SECONDS = float(os.environ.get("MODELPOOL_RESYNC_SECONDS", "30"))
ERROR_BACKOFF_SECONDS = 5.0

TRIGGERS = Triggers()
POLICY_TRIGGERS = Triggers()
POOL_GENERATIONS = GenerationFilter()
ROUTER_LABEL = "modelpool.dev/router"
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


@kopf.on.login(backoff=EXEC_RETRY_S)
async def login(memo: kopf.Memo, **_: Any) -> kopf.AiohttpSession:
    """kopf's connection, from the operator's own credentials and signer
    (:mod:`modelpool.controllers.kopf_login`): the CLI's, else read here."""
    relogins = memo.setdefault("relogins", Relogins())
    await relogins.pace()
    return kopf_session(await credentials_of(memo))


async def credentials_of(memo: kopf.Memo) -> Credentials:
    """The credentials the CLI read and checked before kopf started (``kopf.run(memo=...)``), else
    read now (kopf run some other way), off the event loop: a plugin may take seconds."""
    credentials = memo.get("credentials")
    if not isinstance(credentials, Credentials):
        credentials = memo["credentials"] = await asyncio.to_thread(load_credentials)
    return credentials


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    # Re-list periodically even if the watch stream looks healthy: a lost watch converges.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    memo["kube"] = KubeClient(await credentials_of(memo))
    memo["http"] = httpx.AsyncClient(timeout=PUSH_TIMEOUT_SECONDS)
    memo["planner"] = ScalingPlanner()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if isinstance(kube, KubeClient):
        await kube.close()
    http = memo.get("http")
    if isinstance(http, httpx.AsyncClient):
        await http.aclose()
    planner = memo.get("planner")
    if isinstance(planner, ScalingPlanner):
        await planner.close()


@kopf.on.event(GROUP, VERSION, "modelpools")
def pool_changed(namespace: str | None, name: str, type: str | None, meta: kopf.Meta, **_: Any) -> None:
    ns = namespace or ""
    if POOL_GENERATIONS.changed(ns, name, type, meta.get("generation")):
        TRIGGERS.poke(ns, name)  # not for the pool's own status writes: they changed nothing it reads
    POLICY_TRIGGERS.poke_namespace(ns)  # policies read the pool's status


@kopf.index(GROUP, VERSION, "modelpools")
def gpu_pool_members(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, GpuPoolMember] | None:
    """ModelPools by the shared GPU pool they name, with the GPUs each holds (kopf fills the index
    from the first listing before any daemon starts, so a restarted operator sees every member)."""
    return gpu_pool_member(namespace or "", name, spec, status)


@kopf.index(GROUP, VERSION, "routingpolicies")
def routed_latency_slos(
    namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], int] | None:
    """RoutingPolicies' latency SLOs by the (namespace, pool) they route to: what a pool's
    variants without targetLatencyMs plan for, read without a LIST per decision."""
    entry = policy_latency_slo_ms(spec)
    return None if entry is None else {(namespace or "", entry[0]): entry[1]}


@kopf.on.event(GROUP, VERSION, "routingpolicies")
def policy_changed(namespace: str | None, name: str, **_: Any) -> None:
    POLICY_TRIGGERS.poke(namespace or "", name)


@kopf.on.event("", "v1", "pods", labels={ROUTER_LABEL: kopf.PRESENT})
def router_pod_changed(namespace: str | None, **_: Any) -> None:
    POLICY_TRIGGERS.poke_namespace(namespace or "")


def _by_pool(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body
) -> dict[tuple[str, str], Obj] | None:
    """A child keyed by its (namespace, pool), as the watch last delivered it."""
    pool = labels.get(LABEL_POOL)
    return None if not pool else {(namespace or "", pool): dict(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def pool_deployments(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Obj] | None:
    """The pools' Deployments, from the watch that also wakes them (read instead of a LIST per pass)."""
    return _by_pool(namespace, labels, body)


@kopf.index("", "v1", "services", labels=MANAGED)
def pool_services(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Obj] | None:
    """The pools' Services."""
    return _by_pool(namespace, labels, body)


@kopf.index("", "v1", "pods", labels=MANAGED)
def pool_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Obj] | None:
    """The pools' pods (for the status: ready, pending, unschedulable)."""
    return _by_pool(namespace, labels, body)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
def child_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    pool = labels.get(LABEL_POOL)
    if pool:
        TRIGGERS.poke(namespace or "", pool)


async def _reconcile_loop(
    triggers: Triggers,
    namespace: str,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    reconcile: Callable[[EventSink], Awaitable[float | None]],
) -> None:
    """Run ``reconcile`` when poked, when it asks (seconds it returns) or every RESYNC_SECONDS.

    ``reconcile`` returns None when the object is not there (not found, or being deleted): the loop
    looks again, backing off as after a failure, until kopf's ``stopped`` flag ends it. kopf stops
    the daemon of a deleted object, and a 404 can also come from the API server not serving the
    resource's version for a moment (a CRD being updated). A failed pass is retried after
    ERROR_BACKOFF_SECONDS, doubling while the failures go on, up to one resync period
    (:mod:`modelpool.controllers.backoff`); a poke still wakes the loop at once.
    """

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)
        # The same line in the operator's log, with its time to the millisecond (Events keep seconds).
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        logger.log(level, "%s %s/%s: %s", reason, namespace, name, message)

    where = f"{namespace}/{name}"
    failures = FailureStreak(ERROR_BACKOFF_SECONDS, RESYNC_SECONDS)
    absences = FailureStreak(ERROR_BACKOFF_SECONDS, RESYNC_SECONDS)
    trigger = triggers.get(namespace, name)
    try:
        while not stopped:
            trigger.clear()
            try:
                wanted = await reconcile(emit)
            except Exception as err:  # keep the loop alive, report, retry with backoff
                delay = failures.failed()
                _report_failure(err, failures.failures, delay, where, body, logger, emit)
            else:
                if (ended := failures.succeeded()) is not None:
                    logger.info(
                        "reconcile of %s succeeded again after %d failed passes (%.1f s)", where, *ended
                    )
                if wanted is None and stopped:
                    return
                if wanted is None:
                    delay = absences.failed()
                    _report_absence(absences.failures, delay, where, body, logger)
                else:
                    if (ended := absences.succeeded()) is not None:
                        logger.info("%s found again after %d passes without it (%.1f s)", where, *ended)
                    delay = min(RESYNC_SECONDS, max(wanted, 0.5))
            await triggers.wait(trigger, stopped_flag=stopped, seconds=delay)
    finally:
        triggers.forget(namespace, name, trigger)


def _report_failure(
    err: Exception,
    failures: int,
    delay: float,
    where: str,
    body: kopf.Body,
    logger: kopf.Logger,
    emit: EventSink,
) -> None:
    """Log a failed pass, and post it as a Warning Event, at the 1st, 2nd, 4th, 8th... failure of a
    streak (:func:`report_due`): fewer lines and Events the longer it lasts, still one per
    doubling. Only an unexpected failure's traceback is logged at every pass, for its defect."""
    unexpected = not api_unavailable(err) and not forbidden(err)
    if unexpected:
        logger.exception("reconcile of %s failed", where)
    if not report_due(failures):
        return
    streak = f"failed passes {failures}, next in {delay:.0f} s"
    if api_unavailable(err):
        # Not the object's fault, and no API server to post an Event to (kopf would post the queued
        # ones in a burst once it is back): one line, no traceback.
        logger.warning("API server unavailable for %s (%s: %s); %s", where, type(err).__name__, err, streak)
    elif forbidden(err):
        # The operator's RBAC lacks a permission: a traceback says nothing more than the API
        # server's sentence, which names the verb and resource.
        message = (
            f"permission missing: {err.message}; grant it to the operator's ServiceAccount "
            f"(the chart's RBAC rules); {streak}"
        )
        logger.error("reconcile of %s failed: %s", where, message)
        kopf.event(body, type="Warning", reason="Forbidden", message=message)
    else:
        emit("Warning", "ReconcileError", f"{type(err).__name__}: {err}; {streak}")


def _report_absence(passes: int, delay: float, where: str, body: kopf.Body, logger: kopf.Logger) -> None:
    """Log a pass that did not find its object, at the 1st, 2nd, 4th... such pass in a row: not
    for an object being deleted (kopf stops its daemon), else it is a 404 while kopf still sees the
    object, e.g. its resource's version not served for a moment during a CRD update."""
    if body.get("metadata", {}).get("deletionTimestamp") or not report_due(passes):
        return
    logger.warning(
        "%s not found (the API server answered 404) while kopf still watches it; looking again in "
        "%.0f s (passes without it: %d) until it is found or kopf stops this loop",
        where,
        delay,
        passes,
    )


@kopf.daemon(GROUP, VERSION, "modelpools", cancellation_timeout=10.0)
async def run_pool(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    kube: KubeClient = memo["kube"]
    planner: ScalingPlanner = memo["planner"]
    members: kopf.Index[str, GpuPoolMember] = kwargs["gpu_pool_members"]  # the index below, by name
    slos: kopf.Index[tuple[str, str], int] = kwargs["routed_latency_slos"]
    planner.members = lambda gpu_pool: tuple(members.get(gpu_pool, ()))
    ns = namespace or ""
    cached: dict[str, kopf.Index[tuple[str, str], Obj]] = {
        kind: kwargs[f"pool_{kind}"] for kind in ("deployments", "services", "pods")
    }
    children = RefreshingChildReader(
        api=ApiChildReader(kube, ns, name),
        cache=CachedChildReader(
            deployments=lambda: cached["deployments"].get((ns, name), ()),
            services=lambda: cached["services"].get((ns, name), ()),
            pod_list=lambda: cached["pods"].get((ns, name), ()),
        ),
        every_s=RESYNC_SECONDS,
    )

    async def routed_slo() -> float | None:
        return smallest_slo_s(slos.get((ns, name), ()))

    async def once(emit: EventSink) -> float | None:
        try:
            with observe_reconcile("modelpool"):
                result = await reconcile_pool(
                    kube,
                    ns,
                    name,
                    emit,
                    planner=planner,
                    routed_latency_slo=routed_slo,
                    child_reader=children.for_pass(),
                )
        except Exception:
            children.relist()
            raise
        if result is None:
            forget_conditions("ModelPool", ns, name)
            return None
        record_conditions("ModelPool", ns, name, ((c.type, c.status) for c in result.status.conditions))
        return result.next_in or RESYNC_SECONDS

    try:
        # A pass that finds the pool absent does not end the loop: kopf stops it once the pool is deleted.
        await _reconcile_loop(TRIGGERS, ns, name, body, logger, stopped, once)
    finally:
        # kopf stops the daemon of a deleted pool, often before a pass sees the pool gone (the pass
        # that does calls forget too): drop its scaler memory and metric series here as well.
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
            planner.forget(ns, name)
            forget_conditions("ModelPool", ns, name)


@kopf.daemon(GROUP, VERSION, "routingpolicies", cancellation_timeout=10.0)
async def run_policy(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    kube: KubeClient = memo["kube"]
    http: httpx.AsyncClient = memo["http"]
    ns = namespace or ""

    async def once(emit: EventSink) -> float | None:
        with observe_reconcile("routingpolicy"):
            result = await reconcile_policy(kube, http, ns, name, emit)
        if result is None:
            forget_conditions("RoutingPolicy", ns, name)
            forget_policy_objectives(ns, name)
            return None
        record_conditions("RoutingPolicy", ns, name, ((c.type, c.status) for c in result.conditions))
        return RESYNC_SECONDS

    try:
        # As a pool's: a pass that finds the policy absent does not end the loop (a 404 while the
        # CRD's version is not served for a moment); kopf stops it once the policy is deleted.
        await _reconcile_loop(POLICY_TRIGGERS, ns, name, body, logger, stopped, once)
    finally:
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason:
            forget_conditions("RoutingPolicy", ns, name)
            forget_policy_objectives(ns, name)
