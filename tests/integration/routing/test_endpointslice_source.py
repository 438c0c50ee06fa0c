"""The EndpointSlice endpoint source against a real kube-apiserver (the local kwok cluster)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from integration.cluster.bound_tokens import answers, bound_token, token_kubeconfig, write_atomically
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


BOTH = ["http://10.244.0.5:8000", "http://10.244.0.6:8000"]
ONE = ["http://10.244.0.5:8000"]


async def _start_on_both(cluster: DevCluster, namespace: str, source: EndpointSliceSource) -> None:
    """Slice ``small-a`` with both endpoints ready, then the source started: it sees both."""
    cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", True))
    await source.start()
    assert await _until(source, BOTH) == BOTH


async def _one_unready(cluster: DevCluster, namespace: str, source: EndpointSliceSource) -> None:
    """The second endpoint stops being ready: the source follows."""
    cluster.kubectl("apply", "-f", "-", input_text=_slice(namespace, "small-a", False))
    assert await _until(source, ONE) == ONE


async def test_watch_follows_ready_endpoints(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    source = EndpointSliceSource(SliceConfig(service="small", namespace=namespace, port="http"))
    try:
        await _start_on_both(cluster, namespace, source)
        await _one_unready(cluster, namespace, source)
        cluster.kubectl("delete", "endpointslice", "small-a", "-n", namespace)
        assert await _until(source, []) == []
    finally:
        await source.stop()


def _compact_etcd(cluster: DevCluster) -> int:
    """Compact the cluster's etcd up to its current revision, as the API server has it done every
    5 minutes; older versions can no longer be watched from. Its revision."""
    args = cluster.component("etcd").get("args", [])
    url = next(a.split("=", 1)[1] for a in args if a.startswith("--advertise-client-urls=")).split(",")[0]
    assert url.startswith("http://127.0.0.1:") or url.startswith("http://localhost:"), url
    revision = int(httpx.post(f"{url}/v3/kv/range", json={"key": "AA=="}).json()["header"]["revision"])
    httpx.post(
        f"{url}/v3/kv/compaction", json={"revision": str(revision), "physical": True}
    ).raise_for_status()
    return revision


async def test_a_watch_past_a_compaction_and_an_api_server_restart_lists_again(
    cluster: DevCluster, namespace: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server restarts while the router watches, and etcd has compacted the versions it
    last saw: the new watch from its last version is refused with 410 Gone (``too old resource
    version``, the real API server's answer), and the router lists again and follows on."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    source = EndpointSliceSource(SliceConfig(service="small", namespace=namespace, port="http"))
    try:
        with caplog.at_level(logging.INFO, logger="modelpool.routing.endpoints"):
            await _start_on_both(cluster, namespace, source)
            cluster.kubectl("create", "configmap", "later", "-n", namespace)  # etcd's revision moves on
            _compact_etcd(cluster)
            await asyncio.to_thread(cluster.restart_component, "kube-apiserver")
            await _one_unready(cluster, namespace, source)
        assert source.lists == 2
        gone = [r.getMessage() for r in caplog.records if "listing again" in r.getMessage()]
        assert len(gone) == 1 and "too old resource version" in gone[0], caplog.text
        # Only the broken connections while the API server was away, never a refusal.
        refused = [
            r for r in caplog.records if r.levelno >= logging.WARNING and "KubeError" in r.getMessage()
        ]
        assert not refused, caplog.text
    finally:
        await source.stop()


async def test_the_watch_goes_on_after_its_token_is_rotated_and_the_old_one_refused(
    cluster: DevCluster,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a pod the router logs in with its projected service-account token, which the kubelet
    replaces before it expires. Here its kubeconfig's ``tokenFile`` gets a new token and the old
    one is revoked; the watches made after that (one every 2 s here) must log in with the new one.
    The service account may list and watch EndpointSlices, no more (docs/router.md's Role).
    """
    cluster.kubectl("create", "serviceaccount", "op", "-n", namespace)
    verbs = ["--verb=list,watch", "--resource=endpointslices"]
    cluster.kubectl("create", "role", "slices", "-n", namespace, *verbs)
    binding = ["--role=slices", f"--serviceaccount={namespace}:op"]
    cluster.kubectl("create", "rolebinding", "slices", "-n", namespace, *binding)
    token_file = tmp_path / "token"
    write_atomically(token_file, bound_token(cluster, namespace, "bind-1") + "\n")
    old_token = token_file.read_text().strip()
    user = {"tokenFile": str(token_file)}
    kubeconfig, server, ca = token_kubeconfig(cluster, namespace, user, tmp_path / "kc")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    source = EndpointSliceSource(
        SliceConfig(service="small", namespace=namespace, port="http"), watch_timeout_s=2
    )
    try:
        with caplog.at_level(logging.INFO, logger="modelpool.routing.endpoints"):
            await _start_on_both(cluster, namespace, source)
            write_atomically(token_file, bound_token(cluster, namespace, "bind-2") + "\n")
            cluster.kubectl("delete", "secret", "bind-1", "-n", namespace)
            for _ in range(300):
                if answers(server, ca, old_token) == 401:
                    break
                await asyncio.sleep(0.1)
            assert answers(server, ca, old_token) == 401
            await asyncio.sleep(4)  # two watches end and start again, with the refused token at first
            await _one_unready(cluster, namespace, source)
        # The 401 was answered by reading the token again and sending the watch once more.
        assert source.lists == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        # And it was this service account that watched (not a login read before): without its
        # RoleBinding the next watch is refused.
        cluster.kubectl("delete", "rolebinding", "slices", "-n", namespace)
        with caplog.at_level(logging.INFO, logger="modelpool.routing.endpoints"):
            for _ in range(100):
                if any("403" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.1)
        assert any(f"system:serviceaccount:{namespace}:op" in r.getMessage() for r in caplog.records), (
            caplog.text
        )
    finally:
        await source.stop()
