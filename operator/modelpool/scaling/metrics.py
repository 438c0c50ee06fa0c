"""The operator's own Prometheus metrics for scaling (prometheus-client, dedicated registry).

The lead exposes them with ``prometheus_client.start_http_server(port, registry=REGISTRY)`` and calls
:func:`record_pool` after each :func:`modelpool.scaling.decide`, :func:`forget_pool` when a pool is
deleted or stops scaling, :func:`observe_reconcile` around each reconcile, and :func:`record_error`
on failures. After each pass over a pool or policy it calls :func:`record_conditions` with the
status the pass wrote (or found already written), and :func:`forget_conditions` once the object is
gone: ``modelpool_status_condition``, the conditions as kube-state-metrics exports those of built-in
kinds, is what the chart's alerting rules read (``charts/modelpool/files/alerts/``). A policy's
pass calls :func:`record_policy_objectives` with the spec it has just read and validated (its cap on
the large tier's share, which ``ModelPoolLargeShareAboveCap`` compares with the routers' answers),
and :func:`forget_policy_objectives` when that spec is invalid or the policy is gone.

The per-variant series carry ``namespace``, ``pool`` and ``variant``: one operator serves pools of
every namespace, and two of them may share a name. A deleted pool's series, and those of a variant
removed from its spec, are removed (as kube-state-metrics does for deleted objects), so a dashboard
shows no pools that are gone and the series do not pile up as pools come and go.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from modelpool import __version__
from modelpool.scaling.types import PoolDecision

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds

DECISIONS = Counter(
    "modelpool_scaling_decisions_total",
    "Scaling decisions per variant, by action (up, down, keep, hold).",
    ["namespace", "pool", "variant", "action"],
    registry=REGISTRY,
)
DESIRED_REPLICAS = Gauge(
    "modelpool_scaling_desired_replicas",
    "Desired replicas of the last decision.",
    ["namespace", "pool", "variant"],
    registry=REGISTRY,
)
DEMAND_RPS = Gauge(
    "modelpool_scaling_demand_rps",
    "Demand estimate (req/s) of the last decision.",
    ["namespace", "pool", "variant"],
    registry=REGISTRY,
)
SHORTFALL_RPS = Gauge(
    "modelpool_scaling_shortfall_rps",
    "Demand (req/s) the granted replicas cannot serve within the target (budget cut).",
    ["namespace", "pool", "variant"],
    registry=REGISTRY,
)
CUT_REPLICAS = Gauge(
    "modelpool_scaling_cut_replicas",
    "Replicas wished but cut by the GPU budget.",
    ["namespace", "pool", "variant"],
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

STATUS_CONDITION = Gauge(
    "modelpool_status_condition",
    "The conditions of each ModelPool and RoutingPolicy in its status, as the leader last wrote them: "
    "1 for the condition's status (True, False or Unknown), 0 for the two others "
    "(as kube-state-metrics' kube_pod_status_condition).",
    ["namespace", "name", "kind", "type", "status"],
    registry=REGISTRY,
)
POLICY_MAX_LARGE_SHARE = Gauge(
    "modelpool_routingpolicy_max_large_share_ratio",
    "The cap each RoutingPolicy sets on the share of its pool's answers the large tier gives "
    "(spec.objectives.maxLargeSharePercent / 100, 0 to 1), as the leader last read it; absent "
    "where the policy sets none. `pool` is the policy's spec.poolRef.name, the `pool` label of the "
    "routers' modelpool_router_requests_total.",
    ["namespace", "name", "pool"],
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "modelpool_build_info",
    "1, labelled with the operator's version: every replica, leader or standby, exports it from its "
    "start, so its absence means Prometheus sees no operator at all.",
    ["version"],
    registry=REGISTRY,
)
BUILD_INFO.labels(version=__version__).set(1)


def action_of(desired: int, current: int, held: bool) -> str:
    """``hold``, ``up``, ``down`` or ``keep``."""
    if held:
        return "hold"
    return "up" if desired > current else "down" if desired < current else "keep"


ACTIONS = ("up", "down", "keep", "hold")
_PER_VARIANT_GAUGES = (DESIRED_REPLICAS, DEMAND_RPS, SHORTFALL_RPS, CUT_REPLICAS)
_recorded: dict[tuple[str, str], set[str]] = {}
"""The variants each pool (namespace, name) has series for."""


def record_pool(namespace: str, name: str, pool: PoolDecision) -> None:
    """Count and expose every variant decision of one pool, and remove the series of variants
    no longer in it."""
    key = (namespace, name)
    variants = {v.name for v in pool.variants}
    for gone in _recorded.get(key, set()) - variants:
        _remove_variant(namespace, name, gone)
    _recorded[key] = variants
    for v in pool.variants:
        labels = {"namespace": namespace, "pool": name, "variant": v.name}
        DECISIONS.labels(action=action_of(v.desired_replicas, v.current_replicas, v.held), **labels).inc()
        DESIRED_REPLICAS.labels(**labels).set(v.desired_replicas)
        DEMAND_RPS.labels(**labels).set(v.demand_rps)
        SHORTFALL_RPS.labels(**labels).set(v.shortfall_rps)
        CUT_REPLICAS.labels(**labels).set(v.cut_replicas)


def forget_pool(namespace: str, name: str) -> None:
    """Remove every series of a pool that is gone or no longer decides."""
    for variant in _recorded.pop((namespace, name), set()):
        _remove_variant(namespace, name, variant)


def _remove_variant(namespace: str, pool: str, variant: str) -> None:
    for gauge in _PER_VARIANT_GAUGES:
        with suppress(KeyError):
            gauge.remove(namespace, pool, variant)
    for action in ACTIONS:
        with suppress(KeyError):  # only the actions that happened have a series
            DECISIONS.remove(namespace, pool, variant, action)


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


CONDITION_STATUSES = ("True", "False", "Unknown")
_conditions: dict[tuple[str, str, str], set[str]] = {}
"""The condition types each object (kind, namespace, name) has series for."""


def record_conditions(kind: str, namespace: str, name: str, conditions: Iterable[tuple[str, str]]) -> None:
    """Expose the (type, status) conditions of one object's status: three series per type, 1 for its
    status and 0 for the others, and remove the series of types the status no longer has. A status
    outside True/False/Unknown (a hand-edited one) counts as Unknown."""
    key = (kind, namespace, name)
    current = dict(conditions)
    for gone in _conditions.get(key, set()) - current.keys():
        _remove_condition(kind, namespace, name, gone)
    _conditions[key] = set(current)
    for type_, status in current.items():
        shown = status if status in CONDITION_STATUSES else "Unknown"
        for value in CONDITION_STATUSES:
            STATUS_CONDITION.labels(namespace=namespace, name=name, kind=kind, type=type_, status=value).set(
                1.0 if value == shown else 0.0
            )


def forget_conditions(kind: str, namespace: str, name: str) -> None:
    """Remove every condition series of an object that is gone."""
    for type_ in _conditions.pop((kind, namespace, name), set()):
        _remove_condition(kind, namespace, name, type_)


def _remove_condition(kind: str, namespace: str, name: str, type_: str) -> None:
    for status in CONDITION_STATUSES:
        with suppress(KeyError):
            STATUS_CONDITION.remove(namespace, name, kind, type_, status)


_policy_caps: dict[tuple[str, str], str] = {}
"""The pool each policy (namespace, name) has a cap series for."""


def record_policy_objectives(
    namespace: str, name: str, pool: str, max_large_share_percent: int | None
) -> None:
    """Expose one RoutingPolicy's cap on the large tier's share as a ratio (percent / 100), or
    remove its series where it sets none; a series of the pool it named before is removed."""
    key = (namespace, name)
    before = _policy_caps.get(key)
    if before is not None and (before != pool or max_large_share_percent is None):
        forget_policy_objectives(namespace, name)
    if max_large_share_percent is None:
        return
    _policy_caps[key] = pool
    POLICY_MAX_LARGE_SHARE.labels(namespace=namespace, name=name, pool=pool).set(
        max_large_share_percent / 100
    )


def forget_policy_objectives(namespace: str, name: str) -> None:
    """Remove the objective series of a policy that is gone (or no longer valid)."""
    pool = _policy_caps.pop((namespace, name), None)
    if pool is not None:
        with suppress(KeyError):
            POLICY_MAX_LARGE_SHARE.remove(namespace, name, pool)
