"""A scale-down on the real parts loses no request and frees the removed replica at once.

The operator scales a variant from two replicas to one on the real local cluster. Its two pods
answer at their pod IPs (test hosts, each running a real tritonserver), and a real router sends
load to them through the variant's EndpointSlice, which the real controller-manager keeps.
When the ReplicaSet deletes a pod, the test does what the kubelet would: SIGTERM that pod's
Triton. Triton finishes what is in flight, then waits for its open client connections up to
``--exit-timeout-secs`` (30 s by default, the same as a pod's default grace period) and exits
with code 1 if one is still open. The router must let go of the replica when it leaves the
slice, so that Triton exits cleanly (code 0) and the replica's GPU is not held half a minute
after every scale-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster.kubetools import Kube, wait_for
from integration.cluster.netnshost import NetnsHost
from integration.loadgen import echo_body, paced_load
from modelpool.builders.triton import HTTP_PORT, LABEL_POOL, child_name
from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import parse_config
from modelpool.routing.server import start_router

pytestmark = [pytest.mark.cluster, pytest.mark.triton, pytest.mark.timeout(300)]

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"
POOL = "drain"
EXIT_TIMEOUT_S = 30  # Triton's default, and a pod's default terminationGracePeriodSeconds


def pool(replicas: int) -> dict[str, Any]:
    variant = {
        "name": "small",
        "tier": "small",
        "model": {"name": "echo_small", "repository": "/models"},
        "gpusPerReplica": 0,
        "minReplicas": replicas,
        "maxReplicas": replicas,
        "scaling": {"capacityPerReplicaRps": 10},
    }
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL},
        "spec": {"gpuPool": {"gpuBudget": 4}, "variants": [variant]},
    }


def router_config(namespace: str) -> Any:
    variant = {
        "name": "small",
        "tier": "small",
        "tritonModel": "echo_small",
        "cost": 1.0,
        "weight": 1,
        "endpointSlice": {"service": child_name(POOL, "small"), "namespace": namespace, "port": "http"},
        "timeoutMs": 5000,
    }
    return parse_config(
        {"generation": 1, "pool": POOL, "mode": "weighted", "modelName": POOL, "variants": [variant]}
    )


def pod_ips(kube: Kube) -> dict[str, str]:
    """Pod name -> IP of the pool's pods that are not being deleted."""
    return {
        p["metadata"]["name"]: p["status"]["podIP"]
        for p in kube.list("pod", f"{LABEL_POOL}={POOL}")
        if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
    }


def served(triton: TritonProcess) -> float:
    text = httpx.get(triton.metrics_url, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{")
    )


def router_urls(router: Any) -> list[str]:
    return sorted(e["url"] for e in router.app.router.status()["variants"]["small"])


async def paced_statuses(url: str, rps: float, seconds: float) -> list[int]:
    """Open loop, bounded: int(rps * seconds) requests to the router on 127.0.0.1; their status
    codes, 0 for a request that got no answer."""
    body = echo_body("sleep:20:hi")

    async def send(client: httpx.AsyncClient, i: int) -> int:
        try:
            return (await client.post(url, json=body)).status_code
        except Exception:
            return 0

    return await paced_load(rps, seconds, send)


async def test_scale_down_loses_no_request_and_the_removed_triton_exits_cleanly(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.apply(pool(2))
    ips = wait_for(lambda: (found := pod_ips(kube)) and len(found) == 2 and found, 60, "two pods with IPs")
    with contextlib.ExitStack() as stack:
        tritons: dict[str, TritonProcess] = {}
        for i, (name, ip) in enumerate(sorted(ips.items())):
            host = stack.enter_context(NetnsHost(ip, host_side=f"169.254.124.{i + 1}"))
            triton = TritonProcess(
                MODELS,
                ["echo_small"],
                host=ip,
                http_port=HTTP_PORT,
                exit_timeout=EXIT_TIMEOUT_S,
                command_prefix=["ip", "netns", "exec", host.name],
            )
            stack.callback(triton.stop)
            tritons[name] = triton.start()

        monkeypatch.setenv("KUBECONFIG", str(kube.cluster.kubeconfig))
        router = await start_router(router_config(kube.namespace))
        try:
            listed = sorted(f"http://{ip}:{HTTP_PORT}" for ip in ips.values())
            for _ in range(200):  # the router's EndpointSlice watch lists both replicas
                if router_urls(router) == listed:
                    break
                await asyncio.sleep(0.1)
            assert router_urls(router) == listed
            url = f"{router.url}/v2/models/{POOL}/infer"
            warm = await paced_statuses(url, 40, 1.0)
            assert Counter(warm) == {200: 40}
            assert all(served(t) > 0 for t in tritons.values())  # the router holds connections to both

            load = asyncio.ensure_future(paced_statuses(url, 20, 8.0))
            await asyncio.sleep(1.0)
            kube.apply(pool(1))  # the operator scales the Deployment to one replica
            left = await asyncio.to_thread(
                wait_for, lambda: (found := pod_ips(kube)) and len(found) == 1 and found, 60, "one pod left"
            )
            removed = next(name for name in ips if name not in left)
            terminated = time.monotonic()
            tritons[removed].terminate()  # what the kubelet does to the deleted pod's container
            code = await asyncio.to_thread(tritons[removed].wait, EXIT_TIMEOUT_S + 10)
            took = time.monotonic() - terminated
            statuses = await load
            assert router_urls(router) == [f"http://{ip}:{HTTP_PORT}" for ip in left.values()]
        finally:
            await router.close()

    print(f"removed replica's Triton exited with code {code} {took:.1f}s after SIGTERM")
    assert Counter(statuses) == {200: 160}, "a request was lost during the scale-down"
    assert code == 0, (
        f"the removed replica's Triton exited with code {code} after {took:.1f}s: it waited out its "
        f"{EXIT_TIMEOUT_S}s exit timeout for a client connection that was kept open"
    )
