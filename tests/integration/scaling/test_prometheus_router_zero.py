"""A tier at zero replicas seen through a real router scraped by a real Prometheus (Debian's
/usr/bin/prometheus), with the reader's default queries (docs/scaling.md, "Prometheus queries").

The router (in the test's event loop, on 127.0.0.1) has three weighted variants: ``small``
(weight 3) whose EndpointSlice lists no ready pod (scaled to zero), ``large`` (weight 1) answered by
a fake Triton, and ``quant`` (weight 0, never sent anything). A load of 20 req/s goes through it:
large answers every request, 3 of every 4 were meant for small. small got no attempt, so
``upstream_requests_total`` has no series for it, and the default router-rate query used to return
nothing (``metrics missing``): the tier never came back. Now the router counts the requests meant
for small in ``unavailable_requests_total`` and the default query adds them: ~15 req/s, and
``decide`` scales small up from zero. quant, with the counter at 0 and no upstream series, reads a
rate of 0, not missing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from integration.scaling.promtools import read_variant
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.routing.config import parse_config
from modelpool.routing.server import RunningRouter, start_router
from modelpool.scaling import PoolInput, ScalingInput, VariantDecision, VariantInput, VariantSettings, decide
from modelpool.scaling.demand import metrics_problem
from modelpool.scaling.prometheus_reader import QueryTemplates, VariantTarget
from modelpool.scaling.types import VariantMetrics
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import router_config, tier_variant

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

RPS = 20.0
SMALL = VariantTarget(model="m_small", variant="small", pool="p")
LARGE = VariantTarget(model="m_large", variant="large", pool="p")
QUANT = VariantTarget(model="m_quant", variant="quant", pool="p")
OLD_DEFAULTS = QueryTemplates(
    router_rate="sum(rate(modelpool_router_upstream_requests_total{$router_selector}[$window]))",
    newest_sample="max(timestamp(nv_inference_request_success{$selector}) "
    "or timestamp(modelpool_router_upstream_requests_total{$router_selector}))",
)
NO_URLS: list[str] = []


@dataclass
class Setup:
    router: RunningRouter
    prometheus: PrometheusProcess


def _answer(m: bytes, p: bytes, b: bytes) -> tuple[int, bytes]:
    return 200, json.dumps({"model_name": "m_large", "outputs": []}).encode()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    large = await FakeUpstream(_answer).start()
    config = router_config(
        "weighted",
        tier_variant("small", "small", ["http://127.0.0.1:9"], weight=3),
        tier_variant("quant", "quantized", ["http://127.0.0.1:10"], weight=0),
        tier_variant("large", "large", [large.url]),
    )
    router = await start_router(parse_config(config))
    # small's EndpointSlice lists no ready pod: its Deployment is at zero replicas
    router.app.router.table.variants["small"].source.urls = lambda: NO_URLS  # type: ignore[method-assign]
    prom = PrometheusProcess({"router": [f"127.0.0.1:{router.port}"]}, scrape_interval_s=1.0)
    try:
        await asyncio.to_thread(prom.start)  # the router answers its scrapes meanwhile
        yield Setup(router, prom)
    finally:
        await asyncio.to_thread(prom.stop)
        await router.close()
        large.close()


async def _load(url: str, seconds: float) -> list[str]:
    """RPS requests a second for ``seconds``, one at a time; the variants that answered."""
    answered = []
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url) as client:
        for i in range(int(RPS * seconds)):
            delay = start + i / RPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            resp = await client.post("/v2/models/m/infer", json={"inputs": []})
            assert resp.status_code == 200, resp.text
            answered.append(resp.headers["x-modelpool-variant"])
    return answered


async def test_the_default_router_query_reads_the_demand_of_a_tier_at_zero(setup: Setup) -> None:
    load = asyncio.create_task(_load(setup.router.url, 9.0))
    await asyncio.sleep(7.0)  # a few scrapes under load: rate() over 3 s needs two samples
    small, large, quant, small_before = await asyncio.gather(
        read_variant(setup.prometheus, SMALL),
        read_variant(setup.prometheus, LARGE),
        read_variant(setup.prometheus, QUANT),
        read_variant(setup.prometheus, SMALL, OLD_DEFAULTS),
    )
    now = time.time()
    answered = await load
    print(
        f"\nsmall {small.router_rps} req/s (the old default query: {small_before.problem}), "
        f"large {large.router_rps} req/s, quant {quant.router_rps} req/s"
    )
    assert set(answered) == {"large"}
    settings = VariantSettings(
        name="small",
        min_replicas=0,
        scale_to_zero=True,
        capacity_per_replica_rps=10.0,
        target_queue_time_s=1.0,
    )

    large_settings = VariantSettings(name="large", capacity_per_replica_rps=100.0, target_queue_time_s=1.0)

    def decided(metrics: VariantMetrics) -> VariantDecision:
        """small's decision at zero replicas, beside large (the last tier: it keeps serving)."""
        pool = PoolInput("p", (VariantInput(settings, metrics, 0), VariantInput(large_settings, large, 1)))
        return decide(ScalingInput.single(pool), now).pools["p"].variants[0]

    # the old default queries: no series for small, so no demand, and it stays at zero
    assert small_before.router_rps is None
    assert "metrics missing" in (metrics_problem(small_before, settings, now) or "")
    before = decided(small_before)
    print(f"old queries: {before.reason}")
    assert before.desired_replicas == 0
    # now: 3/4 of 20 req/s were meant for small
    assert metrics_problem(small, settings, now) is None
    assert small.router_rps == pytest.approx(0.75 * RPS, rel=0.3)
    assert small.newest_sample_t is not None and now - small.newest_sample_t < 3.0
    assert large.router_rps == pytest.approx(RPS, rel=0.3)  # its attempts: it answers everything
    # quant: the counter at 0 and no upstream series, a rate of 0 (not missing)
    assert quant.router_rps == 0.0 and metrics_problem(quant, settings, now) is None
    after = decided(small)
    print(f"default queries: {after.reason}")
    assert not after.held and after.desired_replicas >= 2, after.reason  # 15 req/s at 10 per replica
