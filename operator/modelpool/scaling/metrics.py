"""The operator's own Prometheus metrics for scaling (prometheus-client, dedicated registry).

The lead exposes them with ``prometheus_client.start_http_server(port, registry=REGISTRY)`` and calls
:func:`record_decision` after each :func:`modelpool.scaling.decide`, :func:`observe_reconcile` around
each reconcile, and :func:`record_error` on failures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from modelpool.scaling.types import ScalingDecision

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds

DECISIONS = Counter(
    "modelpool_scaling_decisions_total",
    "Scaling decisions per variant, by action (up, down, keep, hold).",
    ["pool", "variant", "action"],
    registry=REGISTRY,
)
DESIRED_REPLICAS = Gauge(
    "modelpool_scaling_desired_replicas",
    "Desired replicas of the last decision.",
    ["pool", "variant"],
    registry=REGISTRY,
)
DEMAND_RPS = Gauge(
    "modelpool_scaling_demand_rps",
    "Demand estimate (req/s) of the last decision.",
    ["pool", "variant"],
    registry=REGISTRY,
)
SHORTFALL_RPS = Gauge(
    "modelpool_scaling_shortfall_rps",
    "Demand (req/s) the granted replicas cannot serve within the target (budget cut).",
    ["pool", "variant"],
    registry=REGISTRY,
)
CUT_REPLICAS = Gauge(
    "modelpool_scaling_cut_replicas",
    "Replicas wished but cut by the GPU budget.",
    ["pool", "variant"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modelpool_reconcile_duration_seconds",
    "Duration of one reconcile, by controller.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
ERRORS = Counter(
    "modelpool_reconcile_errors_total",
    "Reconcile errors, by controller and kind.",
    ["controller", "kind"],
    registry=REGISTRY,
)
KUBE_REQUESTS = Counter(
    "modelpool_kube_requests_total",
    "Requests the operator's own client sent the Kubernetes API server (kopf's watches not included), "
    "by verb (get, list, create, patch, update, delete) and resource (with its subresource).",
    ["verb", "resource"],
    registry=REGISTRY,
)


def action_of(desired: int, current: int, held: bool) -> str:
    """``hold``, ``up``, ``down`` or ``keep``."""
    if held:
        return "hold"
    return "up" if desired > current else "down" if desired < current else "keep"


def record_decision(decision: ScalingDecision) -> None:
    """Count and expose every variant decision of one :func:`decide` result."""
    for pool in decision.pools.values():
        for v in pool.variants:
            labels = {"pool": pool.name, "variant": v.name}
            DECISIONS.labels(action=action_of(v.desired_replicas, v.current_replicas, v.held), **labels).inc()
            DESIRED_REPLICAS.labels(**labels).set(v.desired_replicas)
            DEMAND_RPS.labels(**labels).set(v.demand_rps)
            SHORTFALL_RPS.labels(**labels).set(v.shortfall_rps)
            CUT_REPLICAS.labels(**labels).set(v.cut_replicas)


@contextmanager
def observe_reconcile(controller: str) -> Iterator[None]:
    """Time a reconcile; an exception is counted in ``modelpool_reconcile_errors_total`` and re-raised."""
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        record_error(controller, type(exc).__name__)
        raise
    finally:
        RECONCILE_SECONDS.labels(controller=controller).observe(time.perf_counter() - start)


def record_kube_request(verb: str, resource: str) -> None:
    """Count one request to the Kubernetes API server."""
    KUBE_REQUESTS.labels(verb=verb, resource=resource).inc()


def record_error(controller: str, kind: str) -> None:
    """Count one reconcile error."""
    ERRORS.labels(controller=controller, kind=kind).inc()
