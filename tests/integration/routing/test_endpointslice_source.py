"""The EndpointSlice endpoint source against a real kube-apiserver (the local kwok cluster)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest

from modelpool.devcluster import toolchain
from modelpool.devcluster.cluster import DevCluster
from modelpool.routing.config import EndpointSliceSource as SliceConfig
from modelpool.routing.endpoints import EndpointSliceSource

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def dev_cluster() -> Iterator[DevCluster]:
    """The cluster the cluster tests use; started here (and removed after) only if it is not up."""
    missing = [
        t
        for t in (*toolchain.KUBE_COMMANDS, "etcd", "kwok", "kwokctl")
        if not (toolchain.bin_dir() / t).is_file()
    ]
    if missing:
        pytest.fail(f"control plane binaries missing ({missing}); run `modelpool devcluster build`")
    workdir = toolchain.cache_dir() / "kwok-test"
    dev = DevCluster(name="modelpool-test", workdir=workdir, kubeconfig_out=workdir / "kubeconfig-test.yaml")
    started_here = not dev.is_up()
    if started_here:
        dev.create(nodes=1, gpus_per_node=1)
    yield dev
    if started_here:
        dev.delete()


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


async def test_watch_follows_ready_endpoints(
    dev_cluster: DevCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(dev_cluster.kubeconfig))
    namespace = f"router-{uuid.uuid4().hex[:8]}"
    dev_cluster.kubectl("create", "namespace", namespace)
    source = EndpointSliceSource(SliceConfig(service="small", namespace=namespace, port="http"))
    try:
        dev_cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", True))
        await source.start()
        both = ["http://10.244.0.5:8000", "http://10.244.0.6:8000"]
        assert await _until(source, both) == both
        dev_cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", False))
        assert await _until(source, ["http://10.244.0.5:8000"]) == ["http://10.244.0.5:8000"]
        dev_cluster.kubectl("delete", "endpointslice", "small-a", "-n", namespace)
        assert await _until(source, []) == []
    finally:
        await source.stop()
        dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
