"""Sequence requests (``parameters.sequence_id``, Triton's sequence batcher) stick to one variant and
one endpoint: chosen by rendezvous hashing of the sequence id, with no per-sequence state; they skip
the cascade and the response cache, and fail over when their endpoint is down.  Before, each request
of a sequence was balanced like any other, so a stateful model saw the steps of one sequence spread
over its replicas."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from modelpool.routing.balancing import rendezvous_order, stable_hash
from modelpool.routing.breaker import BreakerState
from modelpool.routing.config import parse_config
from modelpool.routing.router import Router
from modelpool.routing.v2 import find_sequence, sequence_key
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import router_config, running_router, serving, tier_variant

PROBS = {"model_name": "x", "outputs": [
    {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}]}  # fmt: skip


def _ok(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    return 200, json.dumps(PROBS).encode()


def _body(sequence_id: int | str | None, text: str = "hi", **parameters: Any) -> dict[str, Any]:
    tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [text]}
    body: dict[str, Any] = {"inputs": [tensor]}
    if sequence_id is not None:
        body["parameters"] = {"sequence_id": sequence_id, **parameters}
    return body


def _urls(n: int, start: int = 9000) -> list[str]:
    return [f"http://10.0.0.{i}:{start}" for i in range(1, n + 1)]


# ------------------------------------------------------------------ the sequence id


def test_the_sequence_id_is_read_from_the_request_parameters() -> None:
    assert sequence_key(_body(42)) == b"i42"
    assert sequence_key(_body("42")) == b"s42"  # Triton keeps string and integer ids apart
    for none in (_body(0), _body(""), _body(None), _body(True), _body(1.5), {"parameters": "x"}):
        assert sequence_key(none) is None
    raw = json.dumps(_body(7, sequence_start=True)).encode()
    assert find_sequence(raw, None) == b"i7"
    assert find_sequence(json.dumps(_body(None, text='"sequence_id": 3')).encode(), None) is None
    assert find_sequence(b'{"parameters": {"sequence_id": 9', None) is None  # does not decode
    # binary tensors: only the JSON part is looked at
    head = json.dumps({"inputs": [], "parameters": {"sequence_id": "abc"}}).encode()
    assert find_sequence(head + b'"sequence_id"', len(head)) == b"sabc"
    assert find_sequence(b'{"inputs": []}' + b'"sequence_id"', 14) is None


# ------------------------------------------------------------------ the choice


def _router(*variants: dict[str, Any], mode: str = "weighted", **extra: Any) -> Router:
    return Router(parse_config(router_config(mode, *variants, **extra)))


def _pick(router: Router, sequence: bytes) -> tuple[str, str]:
    order, endpoints = router._pick_sequence(router.table, stable_hash(sequence))
    assert endpoints is not None
    return order[0].name, endpoints[0].url


def test_every_request_of_a_sequence_gets_the_same_variant_and_endpoint() -> None:
    router = _router(tier_variant("small", "small", _urls(4)), tier_variant("large", "large", _urls(3, 9001)))
    for seq in (b"i1", b"i2", b"sabc"):
        assert len({_pick(router, seq) for _ in range(20)}) == 1
    # a second router (another process, another pod) agrees: nothing random, nothing per process
    other = _router(tier_variant("small", "small", _urls(4)), tier_variant("large", "large", _urls(3, 9001)))
    assert all(_pick(router, b"i%d" % i) == _pick(other, b"i%d" % i) for i in range(200))


def test_sequences_spread_over_variants_by_weight_and_evenly_over_endpoints() -> None:
    router = _router(
        tier_variant("small", "small", _urls(4), weight=3),
        tier_variant("large", "large", _urls(2, 9001), weight=1),
    )
    picks = [_pick(router, b"i%d" % i) for i in range(1, 8001)]
    variants = Counter(v for v, _ in picks)
    assert 0.72 < variants["small"] / 8000 < 0.78  # 3 : 1
    endpoints = Counter(url for v, url in picks if v == "small")
    assert len(endpoints) == 4 and all(0.2 < n / variants["small"] < 0.3 for n in endpoints.values())


def test_an_endpoint_that_leaves_moves_only_its_own_sequences() -> None:
    urls = _urls(5)
    router = _router(tier_variant("small", "small", urls))
    variant = router.table.variants["small"]
    before = {i: _pick(router, b"i%d" % i)[1] for i in range(1, 2001)}
    gone = urls[2]
    variant.source.urls = lambda: [u for u in urls if u != gone]  # type: ignore[method-assign]
    after = {i: _pick(router, b"i%d" % i)[1] for i in range(1, 2001)}
    moved = {i for i in before if before[i] != after[i]}
    assert moved == {i for i in before if before[i] == gone}
    # with the endpoint back but its breaker open, each of its sequences goes to the same next
    # choice as when it had left
    variant.source.urls = lambda: urls  # type: ignore[method-assign]
    for ep in variant.endpoints():
        if ep.url == gone:
            for _ in range(3):
                ep.breaker.on_failure()
            assert ep.breaker.state is BreakerState.OPEN
    assert {i: _pick(router, b"i%d" % i)[1] for i in range(1, 2001)} == after


def test_rendezvous_order_is_a_ranking_shared_by_subsets() -> None:
    class Node:
        def __init__(self, name: str) -> None:
            self.name = name
            self.hrw = stable_hash(name.encode())

    nodes = [Node(n) for n in "abcdef"]
    for key in range(50):
        full = [n.name for n in rendezvous_order(key, nodes)]
        subset = [n.name for n in rendezvous_order(key, [n for n in nodes if n.name != full[0]])]
        assert subset == full[1:]


def test_a_variant_without_available_endpoints_passes_its_sequences_on() -> None:
    router = _router(tier_variant("small", "small", _urls(2)), tier_variant("large", "large", _urls(2, 9001)))
    on_small = [b"i%d" % i for i in range(1, 200) if _pick(router, b"i%d" % i)[0] == "small"]
    for ep in router.table.variants["small"].endpoints():
        for _ in range(3):
            ep.breaker.on_failure()
    assert {_pick(router, seq)[0] for seq in on_small} == {"large"}


@pytest.mark.parametrize("mode", ["tiered", "cascade"])
def test_without_weights_sequences_go_to_the_baseline_variant(mode: str) -> None:
    router = _router(
        tier_variant("small", "small", _urls(2), weight=0),
        tier_variant("large", "large", _urls(3, 9001), weight=0),
        mode=mode,
        tiers=[{"maxComplexity": 1.0, "target": "small"}],
        cascade={"draft": "small", "verifier": "large"},
    )
    assert {_pick(router, b"i%d" % i)[0] for i in range(1, 100)} == {"large"}


# ------------------------------------------------------------------ over HTTP


def _fakes(n: int) -> contextlib.AbstractAsyncContextManager[list[FakeUpstream]]:
    return serving(*(FakeUpstream(_ok) for _ in range(n)))


def _served(fakes: list[FakeUpstream], sequence_id: int | str) -> list[int]:
    """Which fakes got requests of ``sequence_id``."""
    return [
        i for i, f in enumerate(fakes)
        for _, _, body in f.log
        if json.loads(body).get("parameters", {}).get("sequence_id") == sequence_id
    ]  # fmt: skip


@pytest.mark.parametrize("validate", [False, True], ids=["bytes-forwarded", "validated"])
async def test_the_requests_of_a_sequence_land_on_one_upstream_of_several(validate: bool) -> None:
    async with _fakes(6) as fakes:
        config = router_config(
            "weighted",
            tier_variant("small", "small", [f.url for f in fakes[:3]]),
            tier_variant("large", "large", [f.url for f in fakes[3:]]),
            validateRequests=validate,
        )
        async with running_router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            for sequence_id in (17, 18, "user-7", "user-8"):
                for step in range(12):
                    edges = {"sequence_start": step == 0, "sequence_end": step == 11}
                    body = _body(sequence_id, f"step {step}", **edges)
                    resp = await client.post("/v2/models/m/infer", json=body)
                    assert resp.status_code == 200, resp.text
            for _ in range(12):  # requests of no sequence are balanced as before
                assert (await client.post("/v2/models/m/infer", json=_body(None))).status_code == 200
    for sequence_id in (17, 18, "user-7", "user-8"):
        served = _served(fakes, sequence_id)
        assert len(served) == 12 and len(set(served)) == 1, (sequence_id, served)
    plain = {i for i, f in enumerate(fakes) for *_, body in f.log if "parameters" not in json.loads(body)}
    assert len(plain) > 1


async def test_a_sequence_whose_endpoint_is_down_fails_over_to_one_other() -> None:
    async with _fakes(4) as fakes:
        config = router_config("weighted", tier_variant("small", "small", [f.url for f in fakes]))
        async with running_router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            for _ in range(3):
                assert (await client.post("/v2/models/m/infer", json=_body(5))).status_code == 200
            (pinned,) = set(_served(fakes, 5))
            fakes[pinned].close()  # it stops listening
            for conn in running.app.router.table.variants["small"].endpoints()[pinned].client._idle:
                conn.close()  # and drops its connections, as a Triton that went away
            for _ in range(8):
                assert (await client.post("/v2/models/m/infer", json=_body(5))).status_code == 200
    served = Counter(_served(fakes, 5))
    assert served.pop(pinned) == 3
    assert list(served.values()) == [8]  # every request after it went to the same next choice


async def test_sequences_skip_the_cascade_and_the_cache() -> None:
    async with _fakes(3) as (draft, verifier, verifier2):
        config = router_config(
            "cascade",
            tier_variant("small", "small", [draft.url], weight=0),
            tier_variant("large", "large", [verifier.url, verifier2.url], weight=0),
            cascade={"draft": "small", "verifier": "large", "acceptThreshold": 0.9},
            cache={"enabled": True},
        )
        async with running_router(config) as running, httpx.AsyncClient(base_url=running.url) as client:
            answers = [await client.post("/v2/models/m/infer", json=_body(3)) for _ in range(4)]
            plain = [await client.post("/v2/models/m/infer", json=_body(None)) for _ in range(2)]
    assert [r.status_code for r in answers] == [200] * 4
    assert all(r.headers["x-modelpool-variant"] == "large" for r in answers)
    assert all("x-modelpool-cache" not in r.headers for r in answers)  # identical bodies, not cached
    assert answers[0].json()["parameters"]["modelpool_escalated"] is False
    assert len(_served([draft, verifier, verifier2], 3)) == 4
    assert len(set(_served([draft, verifier, verifier2], 3))) == 1
    assert all(b"sequence_id" not in body for *_, body in draft.log)  # never the draft
    assert plain[1].headers["x-modelpool-cache"] == "hit"  # the others as before
