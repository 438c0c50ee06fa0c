"""Demand for a variant with no available endpoint (docs/router.md, Metrics; docs/scaling.md).

A tier scaled to zero has no endpoint, so the router sends it no attempt and
``upstream_requests_total`` never counts its demand; the scaler, which reads the router's counters,
then never brings it back.  ``unavailable_requests_total{variant}`` counts the requests the policy
meant for such a variant: each test here failed before the counter existed (it read 0).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from prometheus_client import generate_latest

from modelpool.routing.balancing import SmoothWeightedRoundRobin
from modelpool.routing.breaker import BreakerState
from modelpool.routing.config import parse_config
from modelpool.routing.router import Router
from modelpool.routing.server import RunningRouter
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import router_config, running_router, serving, tier_variant

BODY = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}
HARD = ("Summarize, compare and contrast the following extraordinarily complicated statements: "
        + "one two three four five six seven eight nine ten " * 5 + "1234 5678")  # fmt: skip
UNAVAILABLE = "modelpool_router_unavailable_requests_total"
UPSTREAM = "modelpool_router_upstream_requests_total"
NO_URLS: list[str] = []  # one list object: the router compares a source's URLs by identity


def _answer(name: str, probability: float = 0.99) -> bytes:
    outputs = [
        {"name": "OUT", "datatype": "FP32", "shape": [1], "data": [1.0]},
        {
            "name": "PROBABILITIES",
            "datatype": "FP32",
            "shape": [1, 2],
            "data": [probability, 1 - probability],
        },
    ]
    return json.dumps({"model_name": name, "outputs": outputs}).encode()


def _fake(name: str, probability: float = 0.99) -> FakeUpstream:
    return FakeUpstream(lambda m, p, b: (200, _answer(name, probability)))


def _small_then_large(large_url: str) -> dict[str, Any]:
    """Weighted: ``small`` (weight 1, where nothing listens), ``large`` (weight 0) at ``large_url``."""
    return router_config(
        "weighted",
        tier_variant("small", "small", ["http://127.0.0.1:9"]),
        tier_variant("large", "large", [large_url], weight=0),
    )


def _weighted_smalls(**weights: int) -> dict[str, Any]:
    """Weighted: a small-tier variant per name in ``weights``, on ports 9, 10, ... of 127.0.0.1."""
    return router_config(
        "weighted",
        *(
            tier_variant(name, "small", [f"http://127.0.0.1:{port}"], weight=weight)
            for port, (name, weight) in enumerate(weights.items(), start=9)
        ),
    )


def _scale_to_zero(router: Router, name: str) -> None:
    """The variant's EndpointSlice lists no ready pod (what a Deployment at 0 replicas leaves)."""
    router.table.variants[name].source.urls = lambda: NO_URLS  # type: ignore[method-assign]


def _open_breakers(router: Router, name: str) -> None:
    for ep in router.table.variants[name].endpoints():
        for _ in range(ep.breaker.failure_threshold):
            ep.breaker.on_failure()
        assert ep.breaker.state is BreakerState.OPEN


def _samples(text: str, metric: str) -> dict[str, float]:
    """``{variant: value}`` of a per-variant counter in a /metrics text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line.rsplit(" ", 1)
            variant = labels.split('variant="', 1)[1].split('"', 1)[0]
            out[variant] = float(value)
    return out


def _counts(router: Router) -> dict[str, float]:
    return _samples(generate_latest(router.metrics.registry).decode(), UNAVAILABLE)


@contextlib.asynccontextmanager
async def _running(
    config: dict[str, Any], zero: str = "", open_breakers: str = ""
) -> AsyncIterator[RunningRouter]:
    """A router on ``config``; variant ``zero`` at zero replicas, ``open_breakers``' breakers open."""
    async with running_router(config) as running:
        if zero:
            _scale_to_zero(running.app.router, zero)
        if open_breakers:
            _open_breakers(running.app.router, open_breakers)
        yield running


async def _send(running: RunningRouter, n: int, text: str = "hi", **parameters: Any) -> list[str]:
    """``n`` inference requests; the variants that answered them."""
    body = {
        "inputs": [{**BODY["inputs"][0], "data": [text]}],
        **({"parameters": parameters} if parameters else {}),
    }
    answered = []
    async with httpx.AsyncClient(base_url=running.url) as client:
        for _ in range(n):
            resp = await client.post("/v2/models/m/infer", json=body)
            assert resp.status_code == 200, resp.text
            answered.append(resp.headers["x-modelpool-variant"])
    return answered


async def _metrics(running: RunningRouter) -> str:
    async with httpx.AsyncClient(base_url=running.url) as client:
        return (await client.get("/metrics")).text


# ---------------------------------------------------------------- the counter itself


def test_the_counter_is_zero_for_every_configured_variant_and_follows_pushes() -> None:
    """Exported at 0 before any request (so Prometheus has a rate of 0, not no series), for a variant
    a push adds too; a variant a push removes leaves /metrics."""
    config = _small_then_large("http://127.0.0.1:10")
    router = Router(parse_config(config))
    assert _counts(router) == {"small": 0.0, "large": 0.0}
    pushed = {
        **config,
        "generation": 2,
        "variants": [
            config["variants"][0],
            tier_variant("quant", "quantized", ["http://127.0.0.1:11"], weight=0),
        ],
    }
    assert router.apply(parse_config(pushed))
    assert _counts(router) == {"small": 0.0, "quant": 0.0}


# ---------------------------------------------------------------- weighted mode


async def test_weighted_requests_meant_for_a_tier_at_zero_count_as_its_demand() -> None:
    """The reviewer's case: ``small`` (weight 1) at zero replicas, ``large`` (weight 0) answers
    every request by cross-variant retry.  Before, /metrics showed only large's 20 attempts."""
    large = _fake("large")
    async with serving(large):
        config = _small_then_large(large.url)
        async with _running(config, zero="small") as running:
            assert await _send(running, 20) == ["large"] * 20  # the hot path (infer_now) and its tasks
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 20.0, "large": 0.0}
    assert _samples(text, UPSTREAM) == {"large": 20.0}  # attempts only: small got none


def test_weighted_demand_follows_the_weights_and_the_served_split_stays_among_the_available() -> None:
    """Weights 5:3:1 with ``a``'s breakers all open: 5 of every 9 requests were meant for ``a`` and
    count for it; ``b`` and ``c`` serve 3:1 in SWRR's own sequence (the second round for the
    demand does not disturb the served one); nothing counts while every variant is up."""
    config = _weighted_smalls(a=5, b=3, c=1)
    router = Router(parse_config(config))
    table = router.table
    picks = [router._pick_weighted(table)[0][0].name for _ in range(900)]
    assert (picks.count("a"), picks.count("b"), picks.count("c")) == (500, 300, 100)
    assert _counts(router) == {"a": 0.0, "b": 0.0, "c": 0.0}

    _open_breakers(router, "a")
    picks = [router._pick_weighted(table)[0][0].name for _ in range(9000)]
    assert picks.count("b") == 6750 and picks.count("c") == 2250
    expected = SmoothWeightedRoundRobin([("b", 3), ("c", 1)])
    assert picks[:40] == [expected.pick() for _ in range(40)]
    assert _counts(router) == {"a": 5000.0, "b": 0.0, "c": 0.0}


def test_weighted_demand_of_two_variants_at_zero() -> None:
    """Weights 2:1:1 with ``a`` and ``c`` at zero replicas: ``b`` serves everything, and a and c
    count their shares (2 and 1 of every 4)."""
    config = _weighted_smalls(a=2, b=1, c=1)
    router = Router(parse_config(config))
    _scale_to_zero(router, "a")
    _scale_to_zero(router, "c")
    picks = [router._pick_weighted(router.table)[0][0].name for _ in range(400)]
    assert set(picks) == {"b"}
    assert _counts(router) == {"a": 200.0, "b": 0.0, "c": 100.0}


async def test_a_sequence_meant_for_a_tier_at_zero_counts_as_its_demand() -> None:
    """A sequence request whose variant (by rendezvous hashing) has no endpoint goes to the next
    choice, and counts for the one it was meant for."""
    large = _fake("large")
    async with serving(large):
        config = _small_then_large(large.url)
        async with _running(config, zero="small") as running:
            assert await _send(running, 5, sequence_id=42) == ["large"] * 5
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 5.0, "large": 0.0}


# ---------------------------------------------------------------- tiered mode


async def test_tiered_requests_the_score_sends_to_a_tier_at_zero_count_for_it() -> None:
    """Easy texts go to ``small`` (at zero replicas: ``large`` answers them, and they count for
    small); hard ones go to ``large`` and count for nothing."""
    large = _fake("large")
    tiers = [{"maxComplexity": 0.3, "target": "small"}, {"maxComplexity": 1.0, "target": "large"}]
    async with serving(large):
        config = router_config(
            "tiered",
            tier_variant("small", "small", ["http://127.0.0.1:9"]),
            tier_variant("large", "large", [large.url]),
            tiers=tiers,
        )
        async with _running(config, zero="small") as running:
            assert await _send(running, 6, "hi") == ["large"] * 6
            assert await _send(running, 4, HARD) == ["large"] * 4
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 6.0, "large": 0.0}
    assert _samples(text, UPSTREAM) == {"large": 10.0}


async def test_tiered_requests_for_a_large_tier_whose_breakers_are_open_count_for_it() -> None:
    small = _fake("small")
    tiers = [{"maxComplexity": 0.3, "target": "small"}, {"maxComplexity": 1.0, "target": "large"}]
    async with serving(small):
        config = router_config(
            "tiered",
            tier_variant("small", "small", [small.url]),
            tier_variant("large", "large", ["http://127.0.0.1:10"]),
            tiers=tiers,
        )
        async with _running(config, open_breakers="large") as running:
            assert await _send(running, 3, HARD) == ["small"] * 3
            assert await _send(running, 2, "hi") == ["small"] * 2
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 0.0, "large": 3.0}


# ---------------------------------------------------------------- cascade mode


async def test_cascade_requests_count_for_a_draft_tier_at_zero() -> None:
    """The draft (``small``) at zero replicas: the verifier answers every request (no cascade
    decision), and each counts as the draft's demand."""
    large = _fake("large")
    async with serving(large):
        config = router_config(
            "cascade",
            tier_variant("small", "small", ["http://127.0.0.1:9"]),
            tier_variant("large", "large", [large.url]),
            cascade={"draft": "small", "verifier": "large", "acceptThreshold": 0.9},
        )
        async with _running(config, zero="small") as running:
            assert await _send(running, 7) == ["large"] * 7
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 7.0, "large": 0.0}


async def test_cascade_escalations_count_for_a_verifier_at_zero() -> None:
    """Drafts under the threshold escalate to the verifier (``large``, at zero replicas): the
    next tier down answers them (``quant``), and each escalation counts as the verifier's demand;
    confident drafts count for nothing."""
    unsure, quant = _fake("small", probability=0.6), _fake("quant")
    async with serving(unsure, quant):
        config = router_config(
            "cascade",
            tier_variant("small", "small", [unsure.url]),
            tier_variant("quant", "quantized", [quant.url]),
            tier_variant("large", "large", ["http://127.0.0.1:10"]),
            cascade={"draft": "small", "verifier": "large", "acceptThreshold": 0.9},
        )
        async with _running(config, zero="large") as running:
            assert await _send(running, 4) == ["quant"] * 4
            text = await _metrics(running)
    assert _samples(text, UNAVAILABLE) == {"small": 0.0, "quant": 0.0, "large": 4.0}
    assert _samples(text, UPSTREAM) == {"small": 4.0, "quant": 4.0}
