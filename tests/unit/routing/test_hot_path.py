"""The weighted hot path that forwards on callbacks (Router.infer_now): same answers, retries,
deadlines and response order as the task path, against small fake upstream servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from modelpool.routing.router import Router
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import router_config, running_router, tier_variant

BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}


class FakeTriton(FakeUpstream):
    """Answers ``POST .../infer`` with ``status`` after ``delay_s``; counts the requests it got."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.status = 200
        self.delay_s = 0.0
        self.requests = 0

    async def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return self.status, json.dumps({"error": f"{self.name} is not ready"}).encode()
        return self.status, json.dumps({"model_name": self.name, "outputs": []}).encode()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTriton, FakeTriton]]:
    small, large = await FakeTriton("small").start(), await FakeTriton("large").start()
    yield small, large
    small.close()
    large.close()


def _config(small: FakeTriton, large: FakeTriton, **extra: Any) -> dict[str, Any]:
    return router_config(
        "weighted",
        tier_variant("small", "small", [small.url], timeoutMs=300),
        tier_variant("large", "large", [large.url], weight=0, timeoutMs=300),
        **extra,
    )


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many requests the hot path took, and how many went to the task path."""
    counts = {"now": 0, "task": 0}
    now, infer = Router.infer_now, Router.infer

    def infer_now(self: Router, *args: Any) -> Any:
        taken = now(self, *args)
        counts["now"] += taken is not None
        return taken

    async def infer_task(self: Router, *args: Any) -> Any:
        counts["task"] += 1
        return await infer(self, *args)

    monkeypatch.setattr(Router, "infer_now", infer_now)
    monkeypatch.setattr(Router, "infer", infer_task)
    return counts


async def test_answers_on_the_spot_once_a_connection_is_warm(
    fakes: tuple[FakeTriton, FakeTriton], counted: dict[str, int]
) -> None:
    small, large = fakes
    async with running_router(_config(small, large)) as running:
        async with httpx.AsyncClient() as client:
            for _ in range(5):
                r = await client.post(f"{running.url}/v2/models/m/infer", json=BODY)
                assert r.status_code == 200
                assert r.headers["x-modelpool-variant"] == "small"
                assert r.json()["model_name"] == "small"
        assert counted == {"now": 5, "task": 0}
        assert small.requests == 5 and large.requests == 0


async def test_failed_first_attempt_goes_on_to_the_next_variant(
    fakes: tuple[FakeTriton, FakeTriton], counted: dict[str, int]
) -> None:
    small, large = fakes
    async with running_router(_config(small, large)) as running:
        async with httpx.AsyncClient() as client:
            warm = await client.post(f"{running.url}/v2/models/m/infer", json=BODY)
            assert warm.headers["x-modelpool-variant"] == "small"
            small.status = 503  # now the warm connection's first attempt fails
            r = await client.post(f"{running.url}/v2/models/m/infer", json=BODY)
        assert r.status_code == 200
        assert r.headers["x-modelpool-variant"] == "large"
        assert small.requests == 2 and large.requests == 1
        assert counted["now"] == 2 and counted["task"] == 0


async def test_deadline_on_the_spot_gives_504_naming_the_timeout(
    fakes: tuple[FakeTriton, FakeTriton], counted: dict[str, int]
) -> None:
    small, large = fakes
    config = _config(small, large, retry={"maxAttempts": 1})
    async with running_router(config) as running:
        async with httpx.AsyncClient() as client:
            await client.post(f"{running.url}/v2/models/m/infer", json=BODY)
            small.delay_s = 1.0
            r = await client.post(f"{running.url}/v2/models/m/infer", json=BODY, timeout=5)
        assert r.status_code == 504
        assert "timed out" in r.json()["error"] and "no answer within 300 ms" in r.json()["error"]
        assert large.requests == 0  # one attempt allowed
        assert counted["now"] == 2


async def test_pipelined_requests_are_answered_in_order(
    fakes: tuple[FakeTriton, FakeTriton], counted: dict[str, int]
) -> None:
    small, large = fakes
    async with running_router(_config(small, large)) as running:
        async with httpx.AsyncClient() as client:  # warm the upstream connection
            await client.post(f"{running.url}/v2/models/m/infer", json=BODY)
        small.delay_s = 0.2
        body = json.dumps(BODY).encode()
        infer = (
            b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        live = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(infer + live + infer)  # slow one on the spot, then two queued behind it
        await writer.drain()
        statuses = []
        for _ in range(3):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            payload = await reader.readexactly(length)
            statuses.append((head.split(b" ", 2)[1], b"small" in payload))
        writer.close()
        # the infer answers (200 with small's body) keep their places around the health check
        assert statuses == [(b"200", True), (b"200", False), (b"200", True)]
        assert counted["now"] == 2  # the warm-up and the first pipelined request
