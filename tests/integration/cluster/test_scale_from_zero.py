"""A tier scaled to zero comes back when traffic meant for it arrives, on the real parts.

A ModelPool has two tiers: ``small`` (``minReplicas: 0``, ``scaleToZero``, no
``capacityPerReplicaRps``: its capacity was never measured) and ``large`` (the last tier, one
replica). A real router process on 127.0.0.1 sends 3 of every 4 requests to small by weight, but
small has no endpoint: its endpoints come from the EndpointSlice of a Service that selects no pod
(what the router sees of a tier at zero replicas). Not small's own Service: once the operator scales
small up, its EndpointSlice lists kwok's fake pod IPs, and nothing may contact those. So every
request goes to large, a real tritonserver on 127.0.0.1 serving the ``echo_large`` fixture model.
A real Prometheus scrapes the router and the tritonserver; the suite's operator reads it with the
default queries.

The router counts the requests meant for small in ``modelpool_router_unavailable_requests_total``,
the default router-rate query adds them to small's attempts, and the scaler starts
``max(1, minReplicas)`` replicas from zero for that demand (``scale up 0->1: starting 1 replica
from zero: ...``), without holding the pool on missing metrics. Before (commit 0a917b2) small had
no series at all, the pool held it at zero with ``metrics missing``, and the tier never came back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.cluster.kubetools import Kube, parse_metrics, total, wait_for
from integration.loadgen import echo_body, paced_load
from modelpool.builders.triton import child_name
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import parse_config
from modelpool.routing.process import RouterProcess

pytestmark = [pytest.mark.cluster, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.timeout(300)]

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"
POOL = "zero"
MODEL_NAME = "echo"  # the name clients call the pool's model by, at the router
NO_PODS = "small-without-pods"  # a Service that selects no pod: an EndpointSlice with no endpoint
LOAD_RPS = 15.0
LOAD_MAX_S = 60.0
SCRAPE_S = 1.0


def pool_manifest(prometheus_url: str) -> dict[str, Any]:
    small = {
        "name": "small",
        "tier": "small",
        "model": {"name": "echo_small", "repository": "/models"},
        "gpusPerReplica": 0,
        "minReplicas": 0,
        "maxReplicas": 4,
        "scaling": {"scaleToZero": True, "targetQueueTimeMs": 100},  # capacity never measured
    }
    large = {
        "name": "large",
        "tier": "large",
        "model": {"name": "echo_large", "repository": "/models"},
        "gpusPerReplica": 0,
        "minReplicas": 1,
        "maxReplicas": 4,
        "scaling": {"capacityPerReplicaRps": 100, "targetQueueTimeMs": 100},
    }
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL},
        "spec": {
            "gpuPool": {"gpuBudget": 8},
            "scaling": {"intervalSeconds": 1, "rateWindowSeconds": 3, "prometheusURL": prometheus_url},
            "variants": [small, large],
        },
    }


def empty_service() -> dict[str, Any]:
    """A Service whose selector no pod carries: its EndpointSlice never lists an endpoint."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NO_PODS},
        "spec": {
            "selector": {"modelpool-test/no-pod-has-this": "true"},
            "ports": [{"name": "http", "port": 8000, "targetPort": 8000}],
        },
    }


def router_config(namespace: str, large_url: str) -> Any:
    variants = [
        {"name": "small", "tier": "small", "tritonModel": "echo_small", "cost": 1, "weight": 3,
         "endpointSlice": {"service": NO_PODS, "namespace": namespace, "port": "http"}, "timeoutMs": 5000},
        {"name": "large", "tier": "large", "tritonModel": "echo_large", "cost": 10, "weight": 1,
         "endpoints": [large_url], "timeoutMs": 5000},
    ]  # fmt: skip
    return parse_config(
        {"generation": 1, "pool": POOL, "mode": "weighted", "modelName": MODEL_NAME, "variants": variants}
    )


@pytest.fixture(scope="module")
def large_triton() -> Iterator[TritonProcess]:
    with TritonProcess(MODELS, ["echo_large"]) as server:
        yield server


@pytest.fixture
def router(
    kube: Kube, large_triton: TritonProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RouterProcess]:
    kube.apply(empty_service())
    monkeypatch.setenv("KUBECONFIG", str(kube.cluster.kubeconfig))  # its EndpointSlice watch logs in
    with RouterProcess(router_config(kube.namespace, large_triton.http_url)) as process:
        yield process


@pytest.fixture
def prometheus(router: RouterProcess, large_triton: TritonProcess) -> Iterator[PrometheusProcess]:
    jobs = {"router": [f"127.0.0.1:{router.port}"], "triton": [f"127.0.0.1:{large_triton.metrics_port}"]}
    with PrometheusProcess(jobs, scrape_interval_s=SCRAPE_S) as prom:
        yield prom


def small_replicas(kube: Kube) -> int | None:
    dep = kube.get("deployment", child_name(POOL, "small"))
    return int(dep["spec"].get("replicas", 1)) if dep else None


def small_status(kube: Kube) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(small's status entry, the MetricsAvailable condition) of the pool now."""
    status = (kube.get("modelpool", POOL) or {}).get("status", {})
    small = next((v for v in status.get("variants", []) if v["name"] == "small"), None)
    metrics = next((c for c in status.get("conditions", []) if c["type"] == "MetricsAvailable"), None)
    return small, metrics


def router_counts(router: RouterProcess) -> tuple[float, float]:
    """(attempts the router sent to small, requests meant for small that it counted unavailable)."""
    samples = parse_metrics(httpx.get(f"{router.url}/metrics", timeout=10).text)
    return (
        total(samples, "modelpool_router_upstream_requests_total", variant="small"),
        total(samples, "modelpool_router_unavailable_requests_total", variant="small"),
    )


async def load_until(url: str, stop: asyncio.Event) -> Counter[tuple[int, str]]:
    """LOAD_RPS requests a second (open loop) until ``stop`` or LOAD_MAX_S: (status, variant) counts."""
    body = echo_body("hello")

    async def send(client: httpx.AsyncClient, i: int) -> tuple[int, str]:
        r = await client.post(url, json=body)
        return r.status_code, r.headers.get("x-modelpool-variant", "")

    return Counter(await paced_load(LOAD_RPS, LOAD_MAX_S, send, stop))


def test_a_tier_at_zero_comes_back_when_traffic_meant_for_it_arrives(
    kube: Kube, router: RouterProcess, prometheus: PrometheusProcess
) -> None:
    kube.apply(pool_manifest(prometheus.url))
    wait_for(lambda: small_status(kube)[1], 60, "the pool's first decision")
    time.sleep(3 * SCRAPE_S)  # a few decisions without load: small stays where it is
    assert small_replicas(kube) == 0, "small starts at zero replicas (minReplicas 0, no demand)"
    idle = small_status(kube)[1]  # small's rate is 0 (its unavailable counter at 0), not missing

    seen: dict[str, Any] = {"conditions": []}

    async def load_and_watch() -> Counter[tuple[int, str]]:
        stop = asyncio.Event()
        load = asyncio.create_task(load_until(f"{router.url}/v2/models/{MODEL_NAME}/infer", stop))
        started = time.monotonic()
        while not load.done():
            replicas = await asyncio.to_thread(small_replicas, kube)
            small, metrics = await asyncio.to_thread(small_status, kube)
            if metrics is not None and "patched_s" not in seen:
                seen["conditions"].append(metrics)
            if small and small["desiredReplicas"] >= 1 and "status" not in seen:
                seen["status"] = small
            if replicas and "patched_s" not in seen:
                seen["patched_s"] = time.monotonic() - started
                seen["replicas"] = replicas
            if "patched_s" in seen and "status" in seen:
                stop.set()  # the tier is back: no need for more load
            await asyncio.sleep(0.1)
        return await load

    answered = asyncio.run(load_and_watch())
    attempts, unavailable = router_counts(router)
    print(
        f"\nload {LOAD_RPS:.0f} req/s through the router: answers {dict(answered)}; small got "
        f"{attempts:.0f} attempts, {unavailable:.0f} requests meant for it counted unavailable"
    )
    assert "patched_s" in seen, (
        f"small stayed at 0 replicas through {LOAD_MAX_S:.0f} s of {LOAD_RPS:.0f} req/s meant 3/4 for it; "
        f"its status: {small_status(kube)[0]}"
    )
    print(
        f"the operator scaled small from zero to {seen['replicas']} replica(s): the Deployment was "
        f"seen patched {seen['patched_s']:.1f} s after the load started (kubectl every ~0.1 s + its own time)"
    )
    assert seen["replicas"] >= 1

    # The status says it started from zero; so does the Scaled Event of that decision.
    status = seen.get("status") or wait_for(
        lambda: (s := small_status(kube)[0]) and s["desiredReplicas"] >= 1 and s, 10, "small's status"
    )
    print(f"small's status: {status['desiredReplicas']} replica(s): {status['reason']}")
    assert "starting 1 replica from zero" in status["reason"], status
    events = [e["message"] for e in kube.events(POOL) if e["reason"] == "Scaled"]
    assert any(m.startswith("small 0->1: ") and "starting 1 replica from zero" in m for m in events), events

    # Not a hold: MetricsAvailable was True before the load and never went False until the scale-up.
    conditions = [idle, *seen["conditions"]]
    assert conditions, "the pool's MetricsAvailable condition was read during the load"
    assert all(c["status"] == "True" for c in conditions), [c for c in conditions if c["status"] != "True"]

    # Every request was answered by large, and small's endpoints (none) were never tried.
    assert answered and set(answered) == {(200, "large")}, answered
    assert attempts == 0
    assert unavailable > 0
