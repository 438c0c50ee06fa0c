"""The pool's routed latency SLO, read from RoutingPolicies on the real API server."""

from __future__ import annotations

from integration.cluster.kubetools import Kube
from modelpool.controllers.routed_slo import load_routed_latency_slo_s
from modelpool.kube import KubeClient
from modelpool.kubelogin import credentials_from_kubeconfig
from unit.operator.helpers import routing_policy


async def test_smallest_latency_slo_of_the_pools_policies(kube: Kube) -> None:
    client = KubeClient(credentials_from_kubeconfig(kube.cluster.kubeconfig))
    try:
        assert await load_routed_latency_slo_s(client, kube.namespace, "bank") is None
        kube.apply(routing_policy("bank", 800, "slow"))
        kube.apply(routing_policy("bank", 250, "fast"))
        kube.apply(routing_policy("bank", None, "plain"))
        kube.apply(routing_policy("other-pool", 20, "other"))
        assert await load_routed_latency_slo_s(client, kube.namespace, "bank") == 0.25
        assert await load_routed_latency_slo_s(client, kube.namespace, "other-pool") == 0.02
    finally:
        await client.close()
