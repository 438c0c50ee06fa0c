"""The latency SLO that routing asks of a pool: the smallest ``objectives.latencySLOMs`` of the
RoutingPolicies in its namespace that route to it. Variants without ``targetLatencyMs`` plan their
burst reserve against it."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from modelpool.api.base import API_VERSION
from modelpool.api.routingpolicy import RoutingPolicySpec
from modelpool.kube import KubeClient, Obj, resource_path


def routed_latency_slo_s(pool: str, policies: Iterable[Obj]) -> float | None:
    """Smallest latency SLO, in seconds, of the policies routing to ``pool``; None without one.

    A policy whose spec does not validate is skipped: its own controller reports it.
    """
    slos: list[int] = []
    for obj in policies:
        try:
            spec = RoutingPolicySpec.model_validate(obj.get("spec", {}))
        except ValidationError:
            continue
        if spec.pool_ref.name == pool and spec.objectives.latency_slo_ms is not None:
            slos.append(spec.objectives.latency_slo_ms)
    return min(slos) / 1000 if slos else None


async def load_routed_latency_slo_s(kube: KubeClient, namespace: str, pool: str) -> float | None:
    """:func:`routed_latency_slo_s` over the namespace's RoutingPolicies, read from the API server."""
    return routed_latency_slo_s(
        pool, await kube.list(resource_path(API_VERSION, "routingpolicies", namespace))
    )
