"""The pool's routed latency SLO, read from RoutingPolicies on the real API server."""

from __future__ import annotations

from typing import Any

from integration.cluster.kubetools import Kube
from modelpool.controllers.routed_slo import load_routed_latency_slo_s
from modelpool.kube import KubeClient, credentials_from_kubeconfig


def _policy(name: str, pool: str, slo_ms: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "poolRef": {"name": pool},
        "mode": "weighted",
        "weights": [{"variant": "small", "weight": 1}],
        "routerSelector": {"matchLabels": {"app": "router"}},
    }
    if slo_ms is not None:
        spec["objectives"] = {"latencySLOMs": slo_ms}
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_smallest_latency_slo_of_the_pools_policies(kube: Kube) -> None:
    client = KubeClient(credentials_from_kubeconfig(kube.cluster.kubeconfig))
    try:
        assert await load_routed_latency_slo_s(client, kube.namespace, "bank") is None
        kube.apply(_policy("slow", "bank", 800))
        kube.apply(_policy("fast", "bank", 250))
        kube.apply(_policy("plain", "bank", None))
        kube.apply(_policy("other", "other-pool", 20))
        assert await load_routed_latency_slo_s(client, kube.namespace, "bank") == 0.25
        assert await load_routed_latency_slo_s(client, kube.namespace, "other-pool") == 0.02
    finally:
        await client.close()
