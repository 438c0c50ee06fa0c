"""The EndpointSlice endpoint source against a real kube-apiserver (the local kwok cluster)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from modelpool.devcluster.cluster import DevCluster
from modelpool.routing.config import EndpointSliceSource as SliceConfig
from modelpool.routing.endpoints import EndpointSliceSource

pytestmark = pytest.mark.cluster


def _slice(namespace: str, name: str, second_ready: bool) -> str:
    return json.dumps(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": "small"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": True}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": second_ready}},
            ],
        }
    )


async def _until(source: EndpointSliceSource, want: list[str], seconds: float = 20.0) -> list[str]:
    for _ in range(int(seconds * 10)):
        if source.urls() == want:
            break
        await asyncio.sleep(0.1)
    return source.urls()


async def test_watch_follows_ready_endpoints(cluster: DevCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    namespace = f"router-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    source = EndpointSliceSource(SliceConfig(service="small", namespace=namespace, port="http"))
    try:
        cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", True))
        await source.start()
        both = ["http://10.244.0.5:8000", "http://10.244.0.6:8000"]
        assert await _until(source, both) == both
        cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", False))
        assert await _until(source, ["http://10.244.0.5:8000"]) == ["http://10.244.0.5:8000"]
        cluster.kubectl("delete", "endpointslice", "small-a", "-n", namespace)
        assert await _until(source, []) == []
    finally:
        await source.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
