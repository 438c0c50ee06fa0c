"""Applying a config (an admin push or the mounted file): which RoutingPolicy may program a router,
and what a new generation rebuilds (the scorer, the response cache) without holding up inference.
Each test was written to fail before its fix."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool.routing.config import parse_config
from modelpool.routing.router import ConfigRejected, Router
from modelpool.routing.server import RouterApp
from unit.routing import gated_scorer
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import router_config, running_router, serving, tier_variant

TOKEN = "t0ken"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
BODY = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}
OK = json.dumps({"outputs": [{"name": "OUT", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()
URL = "http://127.0.0.1:9"
FIX = "make the routerSelectors of the two policies disjoint"


def _ok(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    return 200, OK


def _weighted(url: str = URL, generation: int = 1, policy: str | None = "a", **extra: Any) -> dict[str, Any]:
    """Pool ``p`` in weighted mode, small 3 : large 1, programmed by ``policy`` (None: no policy)."""
    config = router_config(
        "weighted",
        tier_variant("small", "small", [url], weight=3),
        tier_variant("large", "large", [url], weight=1),
        generation=generation,
        **extra,
    )
    return config if policy is None else {**config, "policy": policy}


def _tiered(url: str, generation: int, scorer_path: str, cut: float = 0.5) -> dict[str, Any]:
    """Pool ``p`` in tiered mode (small up to complexity ``cut``) with a :mod:`gated_scorer` scorer."""
    return router_config(
        "tiered",
        tier_variant("small", "small", [url]),
        tier_variant("large", "large", [url]),
        generation=generation,
        policy="a",
        tiers=[{"maxComplexity": cut, "target": "small"}, {"maxComplexity": 1.0, "target": "large"}],
        scorer=gated_scorer.scorer(scorer_path),
    )


# ------------------------------------------------------------------ which policy programs a router


def test_a_push_from_another_policy_is_refused_naming_both_policies_and_the_fix() -> None:
    """Two RoutingPolicies whose routerSelectors match the same routers: the router took a newer
    generation from either, so its owner (and the ``policy`` label of its metrics) flipped silently."""
    router = Router(parse_config(_weighted(generation=3, policy="a")))
    with pytest.raises(ConfigRejected) as info:
        router.apply(parse_config(_weighted(generation=4, policy="b")))
    message = str(info.value)
    assert "RoutingPolicy 'a'" in message and "RoutingPolicy 'b'" in message and FIX in message
    assert (router.config.policy, router.config.generation) == ("a", 3)


def test_the_policy_that_loses_is_told_about_the_other_policy_not_about_generations() -> None:
    """The other policy's next push, at an older generation, got only "generation 3 is older than
    the active generation 4": nothing said that another policy programs the router."""
    router = Router(parse_config(_weighted(generation=4, policy="a")))
    with pytest.raises(ConfigRejected, match=FIX) as info:
        router.apply(parse_config(_weighted(generation=3, policy="b")))
    assert "older" not in str(info.value)


async def test_a_push_from_another_policy_gets_409_with_the_reason() -> None:
    async with (
        running_router(_weighted(generation=3, policy="a"), admin_token=TOKEN) as running,
        httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
    ):
        resp = await admin.put("/admin/config", json=_weighted(generation=4, policy="b"))
        assert resp.status_code == 409, resp.text
        assert FIX in resp.json()["error"]
        assert running.app.router.config.policy == "a"


def test_a_policy_deleted_and_created_again_under_its_name_still_programs_the_router() -> None:
    router = Router(parse_config(_weighted(generation=3, policy="a")))
    assert router.apply(parse_config(_weighted(generation=4, policy="a", retry={"maxAttempts": 2})))
    assert router.config.generation == 4


def test_a_router_started_without_a_policy_keeps_the_first_policy_that_programs_it() -> None:
    """A router started from a file of its own (no policy) is programmed by the first policy that
    pushes to it; after that neither another policy nor a config without one replaces it."""
    router = Router(parse_config(_weighted(generation=1, policy=None)))
    assert router.apply(parse_config(_weighted(generation=2, policy="b")))
    with pytest.raises(ConfigRejected, match=FIX):
        router.apply(parse_config(_weighted(generation=3, policy="c")))
    with pytest.raises(ConfigRejected, match="names no policy"):
        router.apply(parse_config(_weighted(generation=3, policy=None)))
    assert (router.config.policy, router.config.generation) == ("b", 2)


async def test_a_config_file_of_another_policy_is_refused_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file watch applied a newer generation from any policy; a refused file is logged once
    with its reason, not again at each poll or each new version refused for the same reason."""
    caplog.set_level(logging.WARNING, "modelpool.routing.server")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_weighted(generation=1, policy="a")))
    app = RouterApp(Router(parse_config(_weighted(generation=1, policy="a"))), None, path)

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if FIX in r.getMessage()]

    for generation, policy in ((5, "b"), (6, "b"), (7, "b"), (8, "a"), (9, "b")):
        path.write_text(json.dumps(_weighted(generation=generation, policy=policy)))
        os.utime(path, ns=(0, generation * 10**9))  # the ConfigMap rewritten: a new mtime
        await app.reload_config_file()
        await app.reload_config_file()  # the next poll: the same version
        if generation == 7:
            assert len(refusals()) == 1, refusals()
    assert (app.router.config.policy, app.router.config.generation) == ("a", 8)
    assert len(refusals()) == 2  # once more after a file was applied in between
    assert "RoutingPolicy 'b'" in refusals()[0] and str(path) in refusals()[0]


# ------------------------------------------------------------------ what a new generation rebuilds


async def test_a_push_with_an_unchanged_scorer_does_not_load_it_again() -> None:
    """Every new generation loaded the scorer again (a torch model), however little changed."""
    async with (
        running_router(
            _tiered(URL, 1, "kept"), admin_token=TOKEN, scorer_factory=gated_scorer.load
        ) as running,
        httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
    ):
        assert gated_scorer.LOADS.count("kept") == 1
        for generation, cut in ((2, 0.4), (3, 0.6)):  # new tiers, the same scorer
            resp = await admin.put("/admin/config", json=_tiered(URL, generation, "kept", cut))
            assert resp.json() == {"generation": generation, "changed": True}
        assert gated_scorer.LOADS.count("kept") == 1
        resp = await admin.put("/admin/config", json=_tiered(URL, 4, "other"))  # another scorer
        assert resp.status_code == 200, resp.text
        assert (gated_scorer.LOADS.count("kept"), gated_scorer.LOADS.count("other")) == (1, 1)
        resp = await admin.put("/admin/config", json=_weighted(generation=5))  # no scorer
        assert resp.status_code == 200, resp.text
        resp = await admin.put("/admin/config", json=_tiered(URL, 6, "other"))
        assert gated_scorer.LOADS.count("other") == 2  # weighted mode let it go: loaded again


async def test_a_slow_scorer_load_does_not_hold_up_inference() -> None:
    """The admin PUT loaded a new scorer on the event loop: no request was answered until it was
    loaded.  Now an inference request is answered (by the active config) while it loads."""
    gate = gated_scorer.gate("slow")
    async with (
        serving(FakeUpstream(_ok)) as (fake,),
        running_router(_weighted(fake.url), admin_token=TOKEN, scorer_factory=gated_scorer.load) as running,
        httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
        httpx.AsyncClient(base_url=running.url) as client,
    ):
        push = asyncio.create_task(admin.put("/admin/config", json=_tiered(fake.url, 2, "slow")))
        try:
            assert await asyncio.to_thread(gate.entered.wait, gated_scorer.STUCK_S)
            resp = await client.post("/v2/models/m/infer", json=BODY)
            gated_scorer.EVENTS.append("answered")
            assert resp.status_code == 200
        finally:
            gate.opened.set()
        assert (await push).json() == {"generation": 2, "changed": True}
        assert gated_scorer.EVENTS[-2:] == ["answered", "loaded slow"]
        assert running.app.router.config.mode == "tiered"


async def test_a_push_during_a_slow_scorer_load_is_not_undone_by_it() -> None:
    """Generation 3 arrives while generation 2's scorer loads: 3 is applied at once, and 2, once
    loaded, is refused as older instead of replacing 3."""
    gate = gated_scorer.gate("slow-2")
    async with (
        running_router(_weighted(), admin_token=TOKEN, scorer_factory=gated_scorer.load) as running,
        httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
    ):
        slow = asyncio.create_task(admin.put("/admin/config", json=_tiered(URL, 2, "slow-2")))
        try:
            assert await asyncio.to_thread(gate.entered.wait, gated_scorer.STUCK_S)
            resp = await admin.put("/admin/config", json=_weighted(generation=3))
            gated_scorer.EVENTS.append("generation 3 applied")
            assert resp.json() == {"generation": 3, "changed": True}
        finally:
            gate.opened.set()
        resp = await slow
        assert resp.status_code == 409 and "older" in resp.json()["error"]
        assert gated_scorer.EVENTS[-2:] == ["generation 3 applied", "loaded slow-2"]
        assert (running.app.router.config.generation, running.app.router.config.mode) == (3, "weighted")


async def _ask(client: httpx.AsyncClient) -> str:
    """One inference request; ``hit`` when the response cache answered it, else ``miss``."""
    resp = await client.post("/v2/models/m/infer", json=BODY)
    assert resp.status_code == 200, resp.text
    return "hit" if resp.headers.get("x-modelpool-cache") == "hit" else "miss"


async def test_a_push_that_changes_only_weights_keeps_the_response_cache() -> None:
    """Every push cleared the cache, though the operator pushes new weights often and a cached
    answer of a variant is as good under any weights."""
    async with serving(FakeUpstream(_ok)) as (fake,):
        config = _weighted(fake.url, cache={"enabled": True})
        async with (
            running_router(config, admin_token=TOKEN) as running,
            httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
            httpx.AsyncClient(base_url=running.url) as client,
        ):
            assert [await _ask(client), await _ask(client)] == ["miss", "hit"]
            reweighted = _weighted(fake.url, generation=2, cache={"enabled": True}, retry={"maxAttempts": 1})
            reweighted["variants"][0]["weight"] = 1
            assert (await admin.put("/admin/config", json=reweighted)).status_code == 200
            assert await _ask(client) == "hit"
            assert len(fake.log) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generation", 2),  # a control: nothing else changes, the answers stay cached
        ("tritonModel", "m_other"),
        ("tier", "quantized"),
        ("weight", 0),
        ("mode", "cascade"),
    ],
)
async def test_a_push_that_changes_what_answers_clears_the_response_cache(field: str, value: Any) -> None:
    async with serving(FakeUpstream(_ok)) as (fake,):
        config = _weighted(fake.url, cache={"enabled": True})
        async with (
            running_router(config, admin_token=TOKEN) as running,
            httpx.AsyncClient(base_url=running.url, headers=ADMIN) as admin,
            httpx.AsyncClient(base_url=running.url) as client,
        ):
            assert [await _ask(client), await _ask(client)] == ["miss", "hit"]
            pushed = _weighted(fake.url, generation=2, cache={"enabled": True})
            if field == "mode":
                pushed = {**pushed, "mode": value, "cascade": {"draft": "small", "verifier": "large"}}
            elif field == "generation":
                pass
            else:
                pushed["variants"][1][field] = value
            resp = await admin.put("/admin/config", json=pushed)
            assert resp.status_code == 200, resp.text
            assert await _ask(client) == ("hit" if field == "generation" else "miss")
