"""kopf handlers: thin shells that wake one reconcile loop per pool.

Each ModelPool gets a daemon that runs :func:`reconcile_pool` whenever the pool
or one of its children changes (watch events only *wake* the loop) and at
least every ``RESYNC_SECONDS``, so it is level-based: a missed event costs at
most one resync period.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from modelpool.api.base import GROUP, VERSION
from modelpool.builders.triton import LABEL_POOL, MANAGED_BY
from modelpool.controllers.pool_reconciler import reconcile_pool
from modelpool.controllers.triggers import Triggers
from modelpool.kube import KubeClient

RESYNC_SECONDS = float(os.environ.get("MODELPOOL_RESYNC_SECONDS", "30"))
ERROR_BACKOFF_SECONDS = 5.0

TRIGGERS = Triggers()
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


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
    memo["kube"] = KubeClient.from_environment()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    kube = memo.get("kube")
    if isinstance(kube, KubeClient):
        await kube.close()


@kopf.on.event(GROUP, VERSION, "modelpools")
def pool_changed(namespace: str | None, name: str, **_: Any) -> None:
    TRIGGERS.poke(namespace or "", name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
def child_changed(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    pool = labels.get(LABEL_POOL)
    if pool:
        TRIGGERS.poke(namespace or "", pool)


@kopf.daemon(GROUP, VERSION, "modelpools", cancellation_timeout=10.0)
async def run_pool(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    kube: KubeClient = memo["kube"]
    namespace = namespace or ""

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    trigger = TRIGGERS.get(namespace, name)
    try:
        while not stopped:
            trigger.clear()
            delay = RESYNC_SECONDS
            try:
                if await reconcile_pool(kube, namespace, name, emit) is None:
                    return
            except Exception as err:
                logger.exception("reconcile of %s/%s failed", namespace, name)
                emit("Warning", "ReconcileError", f"{type(err).__name__}: {err}")
                delay = ERROR_BACKOFF_SECONDS
            await TRIGGERS.wait(trigger, stopped_flag=stopped, seconds=delay)
    finally:
        TRIGGERS.forget(namespace, name)
