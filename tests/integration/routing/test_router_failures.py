"""Failure handling against real tritonservers: killed replicas, timeouts, nothing to answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from modelpool.devcluster.triton import TritonProcess, free_port
from modelpool.routing.httpserver import DRAIN_SECONDS
from modelpool.routing.process import RouterProcess

from .conftest import MODELS, router_config, stop_all, text_request

pytestmark = pytest.mark.triton


async def _load(client: httpx.AsyncClient, url: str, n: int, concurrency: int) -> list[httpx.Response]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> httpx.Response:
        async with sem:
            return await client.post(url, json=text_request(f"request {i}"))

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_killed_replicas_lose_no_request_and_come_back(
    make_router: Any, http: httpx.AsyncClient
) -> None:
    small_a = TritonProcess(MODELS, ["echo_small"]).start()
    small_b = TritonProcess(MODELS, ["echo_small"]).start()
    large = TritonProcess(MODELS, ["echo_large"]).start()
    procs = {"small_a": small_a, "small_b": small_b, "large": large}
    try:
        router = await make_router(router_config(procs, "weighted"))
        url = f"{router.url}/v2/models/intents/infer"
        stop = asyncio.Event()

        async def load_until_stopped() -> list[httpx.Response]:
            # Load keeps flowing through both kills, however fast this machine serves it
            # (bounded: at most 100 batches of 40).
            out: list[httpx.Response] = []
            for _ in range(100):
                if stop.is_set():
                    break
                out += await _load(http, url, 40, 8)
            return out

        load = asyncio.ensure_future(load_until_stopped())
        await asyncio.sleep(0.3)
        small_a.kill()  # one replica of small dies mid-load
        await asyncio.sleep(0.3)
        small_b.kill()  # now the whole small variant is gone: large must answer
        after = await _load(http, url, 40, 8)
        stop.set()
        responses = [*await load, *after]
        failed = [(r.status_code, r.text) for r in responses if r.status_code != 200]
        assert failed == []
        assert len(responses) >= 80
        # With every small replica dead, large took over small's share entirely.
        assert Counter(r.headers["x-modelpool-variant"] for r in after) == {"large": 40}
        status = (
            await http.get(
                f"{router.url}/admin/config", headers={"Authorization": "Bearer s3cret-admin-token"}
            )
        ).json()
        assert {e["breaker"] for e in status["variants"]["small"]} == {"open"}
        metrics = (await http.get(f"{router.url}/metrics")).text
        assert (
            'modelpool_router_upstream_errors_total{kind="connect",pool="intents",variant="small"}' in metrics
        )
        # a replica comes back on the same port: the probe lets it back in
        small_a.stop()
        revived = TritonProcess(MODELS, ["echo_small"], http_port=small_a.http_port).start()
        procs["revived"] = revived
        deadline = time.monotonic() + 15
        seen: Counter[str] = Counter()
        while time.monotonic() < deadline and seen["small"] == 0:
            await asyncio.sleep(0.2)
            resp = await http.post(url, json=text_request("back?"))
            assert resp.status_code == 200
            seen[resp.headers["x-modelpool-variant"]] += 1
        assert seen["small"] > 0, "the revived replica was never probed back in"
    finally:
        stop_all(procs.values())


async def test_timeouts_give_504_and_nothing_reachable_gives_503(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    variants = router_config(tritons).to_json()["variants"]
    for v in variants:
        v["timeoutMs"] = 200
    router = await make_router(router_config(tritons, "weighted", variants=variants))
    assert router.app.router.config.retry.max_attempts == 3
    assert (await http.get(f"{router.url}/v2/models/intents/ready")).status_code == 200  # all healthy
    started = time.monotonic()
    slow = await http.post(f"{router.url}/v2/models/intents/infer", json=text_request("sleep:600:slow"))
    elapsed = time.monotonic() - started
    assert slow.status_code == 504
    error = slow.json()["error"]
    assert "timed out" in error
    # It gave up after retry.maxAttempts attempts, each cut at its 200 ms deadline (the model
    # sleeps 600 ms): three timeouts, so at least 3 x 0.2 s. The upper bound only catches a hang.
    assert error.count(": timeout (") == 3, error
    assert 3 * 0.2 <= elapsed < 10 * 3 * 0.2, elapsed
    await asyncio.sleep(1.0)  # let the sleeping model instances finish
    dead = free_port()
    variants = [{**variants[0], "endpoints": [f"http://127.0.0.1:{dead}"]}]
    down = await make_router(
        router_config(tritons, "weighted", variants=variants, pool="down", cascade=None, tiers=None)
    )
    ready_url = f"{down.url}/v2/models/intents/ready"
    # Nothing has failed yet: the endpoint's breaker is closed, so the model counts as ready.
    assert (await http.get(ready_url)).status_code == 200
    # failureThreshold is 2: two requests, each failing to connect, open the only breaker.
    for _ in range(2):
        resp = await http.post(f"{down.url}/v2/models/intents/infer", json=text_request("hello"))
        assert resp.status_code == 503
        assert "cannot connect" in resp.json()["error"]
    assert {e["breaker"] for v in down.app.router.status()["variants"].values() for e in v} == {"open"}
    # Every breaker is open (the probes to the dead port keep failing): not ready.
    assert (await http.get(ready_url)).status_code == 503


async def test_metadata_skips_a_replica_that_does_not_serve_the_model(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    """A metadata GET was resent only after 502/503/504: a replica without the model (one still
    loading it) answered every other GET with Triton's 404 "unknown model", as the first endpoint
    of the large variant here, a Triton that serves only echo_small, does."""
    variants = router_config(tritons).to_json()["variants"]
    variants[1]["endpoints"] = [tritons["small_a"].http_url, tritons["large"].http_url]
    router = await make_router(router_config(tritons, "weighted", variants=variants))
    not_served = await http.get(f"{tritons['small_a'].http_url}/v2/models/echo_large")
    assert not_served.status_code == 404 and "unknown model" in not_served.text, not_served.text  # Triton
    answers = [await http.get(f"{router.url}/v2/models/intents") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert {r.headers["x-modelpool-variant"] for r in answers} == {"large"}
    assert answers[0].json()["name"] == "intents"
    configs = [await http.get(f"{router.url}/v2/models/intents/config") for _ in range(4)]
    assert [r.status_code for r in configs] == [200] * 4, [r.text for r in configs]
    assert {r.json()["name"] for r in configs} == {"echo_large"}


async def test_cascade_keeps_draft_answer_when_verifier_is_down(
    tritons: dict[str, TritonProcess], make_router: Any, http: httpx.AsyncClient
) -> None:
    variants = router_config(tritons).to_json()["variants"]
    variants[1]["endpoints"] = [f"http://127.0.0.1:{free_port()}"]
    router = await make_router(router_config(tritons, "cascade", variants=variants))
    resp = await http.post(f"{router.url}/v2/models/intents/infer", json=text_request("x" * 80))
    assert resp.status_code == 200
    params = resp.json()["parameters"]
    assert params["modelpool_variant"] == "small"
    assert params["modelpool_escalation_failed"] is True


async def test_a_stopping_router_answers_every_request_it_has_received(
    tritons: dict[str, TritonProcess], http: httpx.AsyncClient
) -> None:
    """SIGTERM (a rollout, a scale-down, the pod of a sidecar going away) drains the router:
    the requests in flight are answered, then the process exits. Before, they were cut off."""
    variants = router_config(tritons).to_json()["variants"]
    for v in variants:
        v["timeoutMs"] = 15000  # six 1.5 s requests queue on three one-instance replicas
    router = RouterProcess(router_config(tritons, "weighted", variants=variants)).start()
    try:
        url = f"{router.url}/v2/models/intents/infer"
        bodies = [text_request(f"sleep:1500:request {i}") for i in range(6)]
        in_flight = [asyncio.ensure_future(http.post(url, json=body)) for body in bodies]
        await asyncio.sleep(0.5)
        router.terminate()  # SIGTERM, as the kubelet sends it
        stopped = time.monotonic()
        responses = await asyncio.gather(*in_flight, return_exceptions=True)
        code = await asyncio.to_thread(router.wait, 30)
        took = time.monotonic() - stopped
    finally:
        router.stop()
    outcomes = [r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in responses]
    assert outcomes == [200] * 6
    assert code == 0
    # It exited once they were answered, not at its drain limit (answering takes ~3 s here):
    # the one bound that tells the two apart.
    assert took < DRAIN_SECONDS, took
    with pytest.raises(httpx.ConnectError):
        await http.post(url, json=text_request("after"))
