"""EndpointClient deadlines: one shared timer per endpoint, each request still times out on time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from modelpool.routing.upstream import EndpointClient, UpstreamTimeout

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    """Answers every request after the number of milliseconds in its path (``/wait/300``)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                await asyncio.sleep(int(path.rsplit(b"/", 1)[1]) / 1000)
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _timed(client: EndpointClient, wait_ms: int, limit_s: float) -> tuple[str, float]:
    started = time.monotonic()
    try:
        resp = await client.request(b"GET", f"/wait/{wait_ms}".encode(), [], b"", limit_s)
        outcome = str(resp.status)
    except UpstreamTimeout as err:
        outcome = str(err)
    return outcome, time.monotonic() - started


async def test_each_request_times_out_at_its_own_deadline(slow_server: str) -> None:
    client = EndpointClient(slow_server)
    try:
        # a long deadline arms the timer first; a shorter one started later must not wait for it
        long_ok, short_late, quick_ok = await asyncio.gather(
            _timed(client, 300, 2.0), _timed(client, 1000, 0.1), _timed(client, 10, 2.0)
        )
        assert long_ok[0] == "200" and 0.25 < long_ok[1] < 1.0
        assert short_late[0] == "no answer within 100 ms" and 0.09 < short_late[1] < 0.5
        assert quick_ok[0] == "200" and quick_ok[1] < 0.25
        # after the timer fired (and found nothing else due), later deadlines still fire
        for _ in range(2):
            outcome, took = await _timed(client, 1000, 0.05)
            assert outcome == "no answer within 50 ms" and 0.04 < took < 0.5
        assert (await _timed(client, 0, 1.0))[0] == "200"  # the client still works
    finally:
        client.close()
