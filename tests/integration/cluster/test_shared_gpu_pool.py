"""Two ModelPools in two namespaces share one GPU pool's budget, on the real parts: a real
tritonserver under a bounded load that both pools' variants read through a real Prometheus, and
the operator (as users run it) deciding each pool in its own reconcile pass. By default
(``--gpu-pool-sharing=namespace``) pools of two namespaces do not share; an operator run with
``cluster`` shares between them."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from integration.cluster.kubetools import Kube, OperatorProcess, wait_for
from integration.cluster.test_autoscaling_operator import _paced_load, pool
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess

pytestmark = [pytest.mark.cluster, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.timeout(300)]

BUDGET = 4
LOAD_RPS = 40.0  # 4 replicas' worth at 10 req/s each, for each pool: together they wish for 8+
LOAD_SECONDS = 15.0


def shared_pool(name: str, gpu_pool: str, priority: int, prometheus_url: str) -> dict[str, Any]:
    """The autoscaling test's pool (one variant at 10 req/s per replica), named, on the shared GPU
    pool, one GPU per replica, with a priority."""
    manifest = pool(prometheus_url)
    manifest["metadata"]["name"] = name
    manifest["spec"]["gpuPool"] = {"name": gpu_pool, "gpuBudget": BUDGET}
    manifest["spec"]["variants"][0].update(gpusPerReplica=1, priority=priority)
    return manifest


def _replicas(kube: Kube, pool: str) -> int:
    dep = kube.get("deployment", f"{pool}-small")
    return int(dep["spec"]["replicas"]) if dep else 0


def _condition_message(kube: Kube, pool: str, type_: str) -> str:
    status = (kube.get("modelpool", pool) or {}).get("status") or {}
    found = [c for c in status.get("conditions", []) if c["type"] == type_]
    return str(found[0]["message"]) if found else ""


def test_two_pools_share_a_gpu_pool_by_value_and_never_over_commit_it(
    cluster: DevCluster,
    kube: Kube,
    operator: OperatorProcess,
    echo_triton: TritonProcess,
    echo_prometheus: PrometheusProcess,
    tmp_path: Path,
) -> None:
    other_ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", other_ns)
    other = Kube(cluster, other_ns)
    gpu_pool = f"shared-{uuid.uuid4().hex[:6]}"
    sharing: OperatorProcess | None = None
    try:
        kube.apply(shared_pool("chat", gpu_pool, 0, echo_prometheus.url))
        other.apply(shared_pool("code", gpu_pool, 5, echo_prometheus.url))  # worth more per GPU
        for k, name in ((kube, "chat"), (other, "code")):
            wait_for(lambda k=k, name=name: k.condition("modelpool", name, "MetricsAvailable"), 60, name)
        # The session's operator runs with the default, namespace: neither pool sees the other.
        for type_ in ("MetricsAvailable", "GPUBudgetFits"):
            alone = _condition_message(kube, "chat", type_)
            assert other_ns not in alone, alone

        operator.stop()  # one operator at a time: this one shares between namespaces
        sharing = OperatorProcess(
            cluster,
            tmp_path / "operator-cluster-sharing.log",
            env_extra={"MODELPOOL_GPU_POOL_SHARING": "cluster", "MODELPOOL_METRICS_ADDR": "127.0.0.1"},
        )
        sharing.start()
        shared = f"shared with {other_ns}/code"
        wait_for(lambda: shared in _condition_message(kube, "chat", "MetricsAvailable"), 60, shared)

        seen: list[tuple[int, int]] = []

        async def load_and_watch() -> list[int]:
            load = asyncio.create_task(_paced_load(echo_triton.http_url, LOAD_RPS, LOAD_SECONDS))
            while not load.done():
                chat, code = await asyncio.gather(
                    asyncio.to_thread(_replicas, kube, "chat"), asyncio.to_thread(_replicas, other, "code")
                )
                seen.append((chat, code))
                await asyncio.sleep(0.25)
            return await load

        codes = asyncio.run(load_and_watch())
        assert codes.count(200) == len(codes)
        chat, code = _replicas(kube, "chat"), _replicas(other, "code")
        chat_status = kube.get("modelpool", "chat")["status"]  # type: ignore[index]
        code_status = other.get("modelpool", "code")["status"]  # type: ignore[index]
        print(
            f"\nshared GPU pool of {BUDGET}: chat {chat}, code {code} at the end of the load; "
            f"most held at once {max(a + b for a, b in seen)}; transitions "
            f"{[s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]}\n"
            f"chat: {chat_status['variants'][0]['reason']}"
        )
        assert max(a + b for a, b in seen) <= BUDGET  # never over-committed, while both wished 4+
        assert (chat, code) == (1, 3)  # the pool worth more per GPU gets the rest after the minimums
        cut = re.search(r"budget: 1 of (\d+) wished replicas granted", chat_status["variants"][0]["reason"])
        assert cut is not None and int(cut.group(1)) >= 4, chat_status["variants"][0]["reason"]
        assert "went to higher value per GPU" in chat_status["variants"][0]["reason"]
        metrics = next(c for c in chat_status["conditions"] if c["type"] == "MetricsAvailable")
        assert f"shared with {other_ns}/code" in metrics["message"]
        fits = next(c for c in chat_status["conditions"] if c["type"] == "GPUBudgetFits")
        assert fits["status"] == "True" and f"shared in GPU pool '{gpu_pool}'" in fits["message"]
        assert code_status["variants"][0]["desiredReplicas"] == 3
    finally:
        if sharing is not None:
            sharing.stop()
        if not operator.alive():
            operator.start()
        cluster.kubectl("delete", "namespace", other_ns, "--wait=false", check=False)
