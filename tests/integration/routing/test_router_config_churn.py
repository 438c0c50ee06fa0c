"""A long-running router whose config keeps changing: no stale retries, no lingering state.

Against a real router process and real tritonservers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import parse_config
from modelpool.routing.process import RouterProcess

from .conftest import MODELS, TOKEN, stop_all, text_request

pytestmark = pytest.mark.triton

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def replicas() -> Iterator[list[TritonProcess]]:
    """Two echo_small replicas of the test's own (the test may kill them)."""
    procs = [TritonProcess(MODELS, ["echo_small"]) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        stop_all(procs)


def _one_variant(gen: int, url: str, name: str = "small") -> dict[str, Any]:
    return {
        "generation": gen, "pool": "intents", "mode": "weighted", "modelName": "intents",
        "variants": [{"name": name, "tier": "small", "tritonModel": "echo_small", "cost": 1.0,
                      "weight": 1, "endpoints": [url], "timeoutMs": 10000}],
        "breaker": {"failureThreshold": 2, "openSeconds": 0.3, "maxOpenSeconds": 2.0},
    }  # fmt: skip


async def test_requests_in_flight_on_a_removed_crashing_endpoint_are_retried_on_its_replacement(
    replicas: list[TritonProcess],
) -> None:
    """A push replaces the only endpoint A with B while requests are in flight on A; then A
    crashes. The retries must go to B (the variant's endpoint now), not to A again: before the
    fix they retried A from the superseded config until maxAttempts and the clients got 503."""
    old, new = replicas
    router = RouterProcess(parse_config(_one_variant(1, old.http_url)), admin_token=TOKEN).start()
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            url = f"{router.url}/v2/models/intents/infer"
            warm = await http.post(url, json=text_request("warm the pooled connection"))
            assert warm.status_code == 200
            # the hot path (a warm idle connection) and the task path (new connections)
            in_flight = [
                asyncio.ensure_future(http.post(url, json=text_request(f"sleep:1500:request {i}")))
                for i in range(4)
            ]
            await asyncio.sleep(0.5)
            pushed = await http.put(
                f"{router.url}/admin/config", json=_one_variant(2, new.http_url), headers=AUTH
            )
            assert pushed.status_code == 200, pushed.text
            await asyncio.to_thread(old.kill)  # the removed replica crashes with requests on it
            responses = await asyncio.gather(*in_flight)
    finally:
        router.stop()
    outcomes = [(r.status_code, r.text[:200]) for r in responses]
    assert [code for code, _ in outcomes] == [200] * 4, outcomes


def _series_variants(metrics_text: str) -> set[str]:
    return set(re.findall(r'variant="([^"]*)"', metrics_text))


async def test_metrics_of_variants_removed_from_the_config_do_not_linger(
    replicas: list[TritonProcess],
) -> None:
    """Each push renames the variant; /metrics keeps series only for the variants configured
    now. Before the fix every name ever configured kept its series (about 18 per variant:
    counters and a latency histogram), so a router whose variants change grew without bound."""
    config = parse_config(_one_variant(1, replicas[0].http_url, name="v1"))
    router = RouterProcess(config, admin_token=TOKEN).start()
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            url = f"{router.url}/v2/models/intents/infer"
            first = await http.get(f"{router.url}/metrics")
            for gen in range(2, 42):
                endpoint = replicas[gen % 2].http_url
                pushed = await http.put(
                    f"{router.url}/admin/config", json=_one_variant(gen, endpoint, f"v{gen}"), headers=AUTH
                )
                assert pushed.status_code == 200, pushed.text
                for i in range(3):
                    resp = await http.post(url, json=text_request(f"request {gen}.{i}"))
                    assert resp.status_code == 200, resp.text
            metrics = (await http.get(f"{router.url}/metrics")).text
    finally:
        router.stop()
    assert _series_variants(metrics) == {"v41"}
    series = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    baseline = [line for line in first.text.splitlines() if line and not line.startswith("#")]
    # one variant's series (requests, attempts, latency histogram) on top of the start's
    assert len(series) <= len(baseline) + 25, len(series)
    assert 'modelpool_router_responses_total{code="200",pool="intents"} 120.0' in metrics
