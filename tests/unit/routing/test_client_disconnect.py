"""A client that leaves while the router waits on Triton: the upstream request is cancelled (its
connection closed, so the upstream sees it), and so is any cascade work still to come for it; it is
counted in ``client_disconnects_total`` and as nothing else (no response, no upstream error, nothing
for the circuit breaker).  Before, the router held the upstream request to its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from modelpool.routing.breaker import BreakerState
from unit.routing.fake_upstream import FakeUpstream
from unit.routing.routertools import metric_total, router_config, running_router, serving, tier_variant

BODY = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]})
UNSURE = json.dumps({"model_name": "d", "outputs": [
    {"name": "PROBABILITIES", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]}]})  # fmt: skip


class SlowTriton(FakeUpstream):
    """Answers after ``delay_s``; sees a request cut off when the router closes its connection."""

    def __init__(self) -> None:
        super().__init__(watch_close=True)
        self.delay_s = 0.0

    async def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        await asyncio.sleep(self.delay_s)
        return 200, UNSURE.encode()


def _config(mode: str, draft: str, verifier: str) -> dict[str, Any]:
    return router_config(
        mode,
        tier_variant("small", "small", [draft], timeoutMs=10_000),
        tier_variant("large", "large", [verifier], weight=0, timeoutMs=10_000),
        cascade={"draft": "small", "verifier": "large", "acceptThreshold": 0.9},
    )


async def _send_and_leave(port: int, after_s: float) -> None:
    """One inference request on a raw connection, closed (not half-closed) ``after_s`` later."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = BODY.encode()
    writer.write(
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    await asyncio.sleep(after_s)
    writer.close()
    await writer.wait_closed()


async def _eventually(check: Any, within_s: float = 2.0) -> None:
    for _ in range(int(within_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("mode", "warm"),
    [("weighted", True), ("weighted", False), ("cascade", True)],
    ids=["weighted-hot-path", "weighted-task-path", "cascade"],
)
async def test_a_client_that_disconnects_cancels_the_upstream_request(mode: str, warm: bool) -> None:
    """The weighted hot path (a warm upstream connection: forwarded on callbacks), the task path
    (the router connects first) and the cascade (the draft in flight; no escalation follows).  The
    endpoint's breaker is half-open, its one trial request is the one cut off: the slot is free
    again, the breaker neither closed nor opened."""
    async with (
        serving(SlowTriton(), SlowTriton()) as (draft, verifier),
        running_router(_config(mode, draft.url, verifier.url)) as running,
        httpx.AsyncClient(base_url=running.url) as client,
    ):
        if warm:
            assert (await client.post("/v2/models/m/infer", content=BODY)).status_code == 200
        router = running.app.router
        endpoint = router.table.variants["small"].endpoints()[0]
        endpoint.breaker.state = BreakerState.HALF_OPEN
        asked = len(draft.log), len(verifier.log)
        draft.delay_s = 5.0
        loop = asyncio.get_running_loop()
        left = loop.time()
        await _send_and_leave(running.port, 0.3)
        await _eventually(lambda: draft.abandoned)
        cut_after = loop.time() - left
        metrics = (await client.get("/metrics")).text

    assert len(draft.log) == asked[0] + 1
    assert len(draft.abandoned) == 1, "the upstream request was held to its end"
    assert cut_after < 1.5  # not the draft's 5 s
    assert len(verifier.log) == asked[1]  # no escalation for a client that has left
    disconnects = 'modelpool_router_client_disconnects_total{pool="p",tier="small",variant="small"}'
    assert metric_total(metrics, disconnects) == 1
    assert metric_total(metrics, "modelpool_router_upstream_errors_total") == 0
    assert metric_total(metrics, "modelpool_router_responses_total") == int(warm)  # the cut one: none
    assert endpoint.outstanding == 0
    assert endpoint.breaker.state is BreakerState.HALF_OPEN and endpoint.breaker.failures == 0
    assert endpoint.breaker.allows()  # the trial slot is free again


async def test_a_client_that_times_out_cancels_the_upstream_request() -> None:
    """The same with a real client giving up (httpx's read timeout closes its connection)."""
    async with (
        serving(SlowTriton(), SlowTriton()) as (small, large),
        running_router(_config("weighted", small.url, large.url)) as running,
        httpx.AsyncClient(base_url=running.url) as client,
    ):
        await client.post("/v2/models/m/infer", content=BODY)
        small.delay_s = 5.0
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v2/models/m/infer", content=BODY, timeout=0.3)
        await _eventually(lambda: small.abandoned)
        small.delay_s = 0.0
        after = await client.post("/v2/models/m/infer", content=BODY)
        metrics = (await client.get("/metrics")).text
    assert len(small.abandoned) == 1
    assert after.status_code == 200  # the router goes on as before
    assert metric_total(metrics, "modelpool_router_client_disconnects_total") == 1
    assert metric_total(metrics, "modelpool_router_upstream_errors_total") == 0
