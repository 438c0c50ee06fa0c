"""Router behaviour a review found wrong, each test written to fail before its fix: against small
fake upstreams on 127.0.0.1 and routers started in the test's event loop."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool.routing.breaker import BreakerState
from modelpool.routing.config import parse_config
from modelpool.routing.router import Router
from modelpool.routing.server import RouterApp, RunningRouter
from unit.routing.fake_upstream import FakeUpstream, Handler
from unit.routing.routertools import metric_total, router_config, running_router, serving, tier_variant

OK = json.dumps(
    {"model_name": "x", "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
)
BODY = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}
TOKEN = "t0ken"


class Fake(FakeUpstream):
    """A Triton stand-in: ``handler(method, path, body) -> (status, body)``; logs what it got."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)


def _fakes(*handlers: Handler) -> contextlib.AbstractAsyncContextManager[list[Fake]]:
    """A fake answering with each of ``handlers``, serving while the block runs."""
    return serving(*(Fake(h) for h in handlers))


def _router(config: dict[str, Any], **kwargs: Any) -> contextlib.AbstractAsyncContextManager[RunningRouter]:
    """A router on ``config`` with the admin token ``TOKEN``, serving while the block runs."""
    return running_router(config, admin_token=TOKEN, **kwargs)


def _ok(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    return 200, OK.encode()


async def test_a_breaker_a_push_opens_is_probed_and_closes_again() -> None:
    """A push lowering ``failureThreshold`` under an endpoint's failure count opens its breaker;
    only a failed attempt woke the probe loop, so nothing probed it and a variant with one
    endpoint stayed down for good (0 probes in 5 s, 503s with the upstream healthy)."""
    healthy = False

    def handler(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        return (200, OK.encode()) if healthy else (503, b'{"error":"down"}')

    async with _fakes(handler) as (fake,):
        config = router_config(
            "weighted",
            tier_variant("small", "small", [fake.url]),
            retry={"maxAttempts": 1},
            breaker={"failureThreshold": 5, "openSeconds": 0.2},
        )
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            for _ in range(3):
                assert (await client.post("/v2/models/m/infer", json=BODY)).status_code == 503
            router = running.app.router
            router.apply(
                parse_config(
                    {**config, "generation": 2, "breaker": {"failureThreshold": 2, "openSeconds": 0.2}}
                )
            )
            breaker = router.table.variants["small"].endpoints()[0].breaker
            assert breaker.state is BreakerState.OPEN
            healthy = True
            for _ in range(50):
                if breaker.state is not BreakerState.OPEN:
                    break
                await asyncio.sleep(0.1)
            assert any(path.endswith(b"/ready") for _, path, _ in fake.log)  # probed
            assert (await client.post("/v2/models/m/infer", json=BODY)).status_code == 200
            assert breaker.state is BreakerState.CLOSED


async def test_a_push_with_an_unusable_endpoint_url_gets_422_and_the_old_config_stays() -> None:
    """``http://127.0.0.1:80000`` passed the config check (only the prefix was looked at); building
    its endpoint then raised after the variant had stored the URLs, so the variant silently had no
    endpoint: a 500, then every request went to the other variant."""
    async with _fakes(_ok) as (fake,):
        config = router_config(
            "weighted", tier_variant("small", "small", [fake.url]), tier_variant("large", "large", [fake.url])
        )
        async with (
            _router(config) as running,
            httpx.AsyncClient(base_url=running.url, headers={"authorization": f"Bearer {TOKEN}"}) as client,
        ):
            typo_variant = tier_variant("small", "small", ["http://127.0.0.1:80000"])
            typo = {**config, "generation": 2, "variants": [typo_variant, config["variants"][1]]}
            resp = await client.put("/admin/config", content=json.dumps(typo))
            assert resp.status_code == 422, resp.text
            assert resp.json()["problems"][0]["field"] == "variants.0.endpoints.0"
            assert "Port out of range" in resp.json()["problems"][0]["message"]
            assert running.app.router.config.generation == 1
            answered = [(await client.post("/v2/models/m/infer", json=BODY)) for _ in range(4)]
            assert [r.status_code for r in answered] == [200] * 4
            assert {r.headers["x-modelpool-variant"] for r in answered} == {"small", "large"}


def test_a_variant_whose_url_cannot_be_built_does_not_lose_its_endpoints_silently() -> None:
    """The endpoints are built before the URLs are stored: a URL the client refuses (one from an
    EndpointSlice, say) fails every time, not once and then leaves the variant empty."""
    router = Router(
        parse_config(router_config("weighted", tier_variant("small", "small", ["http://127.0.0.1:9"])))
    )
    variant = router.table.variants["small"]
    bad = ["http://127.0.0.1:80000"]
    variant.source.urls = lambda: bad  # type: ignore[method-assign]
    for _ in range(2):
        with pytest.raises(ValueError, match="Port out of range"):
            variant.endpoints()


_LOOKUP_ERROR_SCORER = {"kind": "torch", "path": "no-such-codec"}
"""A torch scorer that :func:`codecs.lookup`, the factory of these routers, fails to load with a
LookupError, none of the ValueError/OSError/ImportError/RuntimeError the router caught (the real
torch factory raises KeyError for a scorer.json of ``{}``)."""


def _tiered(url: str, **extra: Any) -> dict[str, Any]:
    tiers = [{"maxComplexity": 0.5, "target": "small"}, {"maxComplexity": 1.0, "target": "large"}]
    return router_config(
        "tiered",
        tier_variant("small", "small", [url]),
        tier_variant("large", "large", [url]),
        tiers=tiers,
        **extra,
    )


async def test_a_scorer_that_fails_with_any_error_gets_422_and_the_file_watch_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Such an error gave the PUT a 500 and ended the config file watch: no later file applied."""
    caplog.set_level(logging.CRITICAL, "modelpool.routing")
    async with _fakes(_ok) as (fake,):
        base = _tiered(fake.url)
        bad = {**base, "generation": 2, "scorer": _LOOKUP_ERROR_SCORER}
        async with (
            _router(base, scorer_factory=codecs.lookup) as running,
            httpx.AsyncClient(base_url=running.url, headers={"authorization": f"Bearer {TOKEN}"}) as client,
        ):
            resp = await client.put("/admin/config", content=json.dumps(bad))
            assert resp.status_code == 422, resp.text
            assert resp.json()["problems"] == [
                {"field": "scorer", "message": "LookupError: unknown encoding: no-such-codec"}
            ]

        path = tmp_path / "config.json"
        path.write_text(json.dumps(base))
        app = RouterApp(Router(parse_config(base), scorer_factory=codecs.lookup), None, path)
        watch = asyncio.get_running_loop().create_task(app.watch_config_file(interval=0.02))
        try:
            for generation, config in ((2, bad), (3, {**base, "generation": 3})):
                path.write_text(json.dumps(config))
                os.utime(path, ns=(0, generation * 10**9))  # a new mtime each time
                await asyncio.sleep(0.2)
                assert not watch.done(), watch.exception()
            assert app.router.config.generation == 3
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def test_validate_requests_checks_bodies_on_the_hot_path_too() -> None:
    """``validateRequests: true`` in weighted mode: Router.infer_now never looked at it, so every
    request went to Triton unchecked (its 400, not the router's naming the field)."""
    bad = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["only one"]}]}
    async with _fakes(_ok) as (fake,):
        config = router_config("weighted", tier_variant("small", "small", [fake.url]), validateRequests=True)
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            for body in (bad, BODY, bad, bad):  # the first before, the others after a warm connection
                resp = await client.post("/v2/models/m/infer", json=body)
                if body is bad:
                    assert resp.status_code == 400
                    assert resp.json()["error"] == "inputs[0].data: shape [2] needs 2 elements, data has 1"
                else:
                    assert resp.status_code == 200
    assert len(fake.log) == 1  # only the valid one went upstream


async def test_metadata_goes_past_an_endpoint_that_has_not_loaded_the_model() -> None:
    """A GET forwarded to Triton (model metadata, config) was retried only on 502/503/504: a
    replica still loading the model answered 400 "unknown model" to every other request."""
    not_loaded = b'{"error":"Request for unknown model: \'m_large\' is not found"}'
    meta = json.dumps({"name": "m_large", "versions": ["1"], "platform": "x", "inputs": [], "outputs": []})

    def loading(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        return 400, not_loaded

    def ready(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        return 200, meta.encode() if method == b"GET" else OK.encode()

    async with _fakes(loading, ready) as fakes:
        config = router_config("weighted", tier_variant("large", "large", [f.url for f in fakes]))
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            answers = [await client.get("/v2/models/m") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert answers[0].json()["name"] == "m"
    assert any(method == b"GET" for method, _, _ in fakes[0].log)  # it was asked, and passed over


async def test_a_draft_whose_confidence_cannot_be_read_is_escalated() -> None:
    """docs/router.md: an output the cascade cannot read escalates; the draft was kept instead
    (and counted as accepted)."""
    unreadable = {"model_name": "d", "outputs": [  # shape says 3 values per row, there are 2
        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2]}]}  # fmt: skip
    sure = {"model_name": "v", "outputs": [
        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 2], "data": [0.01, 0.99]}]}  # fmt: skip
    async with _fakes(lambda *_: (200, json.dumps(unreadable).encode()),
                      lambda *_: (200, json.dumps(sure).encode())) as (draft, verifier):  # fmt: skip
        config = router_config(
            "cascade",
            tier_variant("small", "small", [draft.url]),
            tier_variant("large", "large", [verifier.url]),
            cascade={"draft": "small", "verifier": "large", "acceptThreshold": 0.9},
        )
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            resp = await client.post("/v2/models/m/infer", json=BODY)
            metrics = (await client.get("/metrics")).text
    assert resp.status_code == 200
    assert resp.headers["x-modelpool-variant"] == "large"
    assert resp.json()["parameters"]["modelpool_escalated"] is True
    assert len(verifier.log) == 1
    assert metric_total(metrics, 'modelpool_router_cascade_decisions_total{outcome="escalated"') == 1
    assert metric_total(metrics, 'modelpool_router_cascade_decisions_total{outcome="accepted"') == 0


async def test_cache_hits_are_counted_in_the_response_metrics() -> None:
    """A cache hit returned before the response metrics: 5 answers, responses_total 1."""
    async with _fakes(_ok) as (fake,):
        config = router_config(
            "weighted", tier_variant("small", "small", [fake.url]), cache={"enabled": True}
        )
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            hits = [
                (await client.post("/v2/models/m/infer", json=BODY)).headers.get("x-modelpool-cache")
                for _ in range(5)
            ]
            metrics = (await client.get("/metrics")).text
    assert hits == [None, "hit", "hit", "hit", "hit"]
    assert metric_total(metrics, 'modelpool_router_responses_total{code="200"') == 5
    assert metric_total(metrics, "modelpool_router_request_latency_seconds_count") == 5
    assert len(fake.log) == 1


async def test_the_response_cache_is_bounded_by_bytes() -> None:
    """``cache.maxBytes``: least recently used responses go when the bytes are over it, and one
    bigger than it is not cached at all (before, 1,024 entries of any size were kept)."""

    def sized(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        size = json.loads(body)["inputs"][0]["data"][0]  # the answer's size, in bytes
        return 200, json.dumps({"outputs": [], "pad": "x" * (size - 26)}).encode()

    def request(size: int) -> dict[str, Any]:
        return {"inputs": [{"name": "N", "datatype": "INT32", "shape": [1], "data": [size]}]}

    async with _fakes(sized) as (fake,):
        config = router_config(
            "weighted", tier_variant("small", "small", [fake.url]), cache={"enabled": True, "maxBytes": 3000}
        )
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:

            async def cached(size: int) -> bool:
                resp = await client.post("/v2/models/m/infer", json=request(size))
                assert resp.status_code == 200 and len(resp.content) == size
                return resp.headers.get("x-modelpool-cache") == "hit"

            assert [await cached(4000), await cached(4000)] == [False, False]  # over the bound
            assert [await cached(1000), await cached(1001), await cached(1000)] == [False, False, True]
            assert await cached(1002) is False  # 3,000 bytes of bodies and headers: 1001 goes
            assert [await cached(1000), await cached(1002), await cached(1001)] == [True, True, False]
    assert len(fake.log) == 6


@pytest.mark.parametrize("mode", ["tiered", "weighted"])
async def test_deeply_nested_json_gets_400_and_is_counted(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A RecursionError while parsing (json.loads past its depth, or the element count walking
    nested ``data``) gave a 500 the response metrics never saw."""
    caplog.set_level(logging.CRITICAL, "modelpool.routing")
    bodies = [
        b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # json.loads gives up
        b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":%s"x"%s}]}'
        % (b"[" * 600, b"]" * 600),
    ]
    async with _fakes(_ok) as (fake,):
        config = router_config(
            mode,
            tier_variant("small", "small", [fake.url]),
            tiers=[{"maxComplexity": 1.0, "target": "small"}],
            **({"validateRequests": True} if mode == "weighted" else {}),
        )
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            for body in bodies:
                resp = await client.post("/v2/models/m/infer", content=body)
                assert resp.status_code == 400, resp.text
                assert "nested too deeply" in resp.json()["error"]
            metrics = (await client.get("/metrics")).text
    assert metric_total(metrics, 'modelpool_router_responses_total{code="400"') == 2
    assert fake.log == []


def test_a_variant_without_endpoints_gives_its_share_to_the_others_by_their_weights() -> None:
    """Weights 5:3:1 with ``a`` down: ``b`` and ``c`` share 3:1, in SWRR's own sequence for 3:1.
    A second pick per request skewed it (6,333 : 2,667 of 9,000 instead of 6,750 : 2,250)."""
    from modelpool.routing.balancing import SmoothWeightedRoundRobin

    config = router_config(
        "weighted",
        *(
            {**tier_variant(name, "small", [f"http://127.0.0.1:{port}"]), "weight": weight}
            for name, port, weight in (("a", 9, 5), ("b", 10, 3), ("c", 11, 1))
        ),
    )
    router = Router(parse_config(config))
    table = router.table
    for ep in table.variants["a"].endpoints():
        ep.breaker.on_failure()
        ep.breaker.on_failure()
        ep.breaker.on_failure()
        assert ep.breaker.state is BreakerState.OPEN
    picks = [router._pick_weighted(table)[0][0].name for _ in range(9000)]
    assert picks.count("b") == 6750 and picks.count("c") == 2250
    expected = SmoothWeightedRoundRobin([("b", 3), ("c", 1)])
    assert picks[:40] == [expected.pick() for _ in range(40)]
    # back up: the three share 5:3:1 over every window of 9 again
    for ep in table.variants["a"].endpoints():
        ep.breaker.on_success()
    picks = [router._pick_weighted(table)[0][0].name for _ in range(900)]
    assert (picks.count("a"), picks.count("b"), picks.count("c")) == (500, 300, 100)


def test_escalations_count_only_drafts_the_verifier_answered() -> None:
    """``cascade_escalations_total`` ("Drafts the verifier re-answered") counted failed escalations
    too; the acceptance ratio is accepted over every cascade decision (docs/router.md)."""
    from prometheus_client import generate_latest

    router = Router(
        parse_config(router_config("weighted", tier_variant("small", "small", ["http://127.0.0.1:9"])))
    )
    for outcome in ("accepted", "escalated", "escalation_failed", "escalation_failed"):
        router.metrics.cascade(outcome)
    text = generate_latest(router.metrics.registry).decode()
    assert metric_total(text, "modelpool_router_cascade_escalations_total") == 1
    assert metric_total(text, "modelpool_router_cascade_acceptance_ratio") == pytest.approx(0.25)
    assert metric_total(text, 'modelpool_router_cascade_decisions_total{outcome="escalation_failed"') == 2


async def _raw_get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path`` as sent, dot segments and all (httpx would normalize them away)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_model_gets_reach_only_tritons_model_routes_and_versioned_metadata_is_renamed() -> None:
    """A GET under /v2/models/<model> went on with any suffix (``/../../metrics`` too), and the
    metadata of ``/versions/<n>`` kept the variant's Triton model name."""
    meta = json.dumps({"name": "m_large", "versions": ["1"], "platform": "x", "inputs": [], "outputs": []})
    async with _fakes(lambda *_: (200, meta.encode())) as (fake,):
        config = router_config("weighted", tier_variant("large", "large", [fake.url]))
        async with _router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            versioned = await client.get("/v2/models/m/versions/1")
            config_get = await client.get("/v2/models/m/versions/1/config")
            crafted = [
                await _raw_get(running.url, "/v2/models/m" + suffix)
                for suffix in (
                    "/../../metrics",
                    "/versions/1/../../../v2/repository",
                    "/unknown",
                    "/versions/x",
                )
            ]
    assert versioned.status_code == 200 and versioned.json()["name"] == "m"
    assert config_get.status_code == 200
    assert [status for status, _ in crafted] == [404] * 4
    assert all("a model's GETs are" in body["error"] for _, body in crafted), crafted
    asked = [path for _, path, _ in fake.log]
    assert asked == [b"/v2/models/m_large/versions/1", b"/v2/models/m_large/versions/1/config"], asked
