"""The latency SLO that routing asks of a pool: the smallest ``objectives.latencySLOMs`` of the
RoutingPolicies in its namespace that route to it. Variants without ``targetLatencyMs`` plan their
burst reserve against it.

The operator keeps these SLOs in a kopf index (``handlers.routed_latency_slos``), filled from its
watch of RoutingPolicies, so a decision reads no list from the API server;
:func:`load_routed_latency_slo_s` reads them directly, for a reconcile run outside the operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from modelpool.api.base import API_VERSION
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.kube import KubeClient, Obj, resource_path


def policy_latency_slo_ms(spec: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(pool it routes to, its latencySLOMs)`` of one RoutingPolicy spec; None when it sets no
    latency SLO or does not validate (its own controller reports that)."""
    try:
        valid = RoutingPolicySpec.model_validate(dict(spec))
    except ValidationError:
        return None
    if valid.objectives.latency_slo_ms is None:
        return None
    return valid.pool_ref.name, valid.objectives.latency_slo_ms


def smallest_slo_s(slos_ms: Iterable[int]) -> float | None:
    """The smallest of some latency SLOs in ms, in seconds; None without one."""
    slos = list(slos_ms)
    return min(slos) / 1000 if slos else None


def routed_latency_slo_s(pool: str, policies: Iterable[Obj]) -> float | None:
    """Smallest latency SLO, in seconds, of the policies routing to ``pool``; None without one."""
    slos: list[int] = []
    for obj in policies:
        entry = policy_latency_slo_ms(obj.get("spec", {}))
        if entry is not None and entry[0] == pool:
            slos.append(entry[1])
    return smallest_slo_s(slos)


async def load_routed_latency_slo_s(kube: KubeClient, namespace: str, pool: str) -> float | None:
    """:func:`routed_latency_slo_s` over the namespace's RoutingPolicies, read from the API server."""
    return routed_latency_slo_s(
        pool, await kube.list(resource_path(API_VERSION, "routingpolicies", namespace))
    )
