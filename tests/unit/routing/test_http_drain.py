"""The router's HTTP server shuts down without dropping a request (``HttpServer.drain``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelpool.routing.httpserver import HttpServer, Request, Response, start_server


async def _slow(request: Request) -> Response:
    """Answers after the number of milliseconds in the path (``/wait/300``)."""
    await asyncio.sleep(int(request.path.rsplit(b"/", 1)[1]) / 1000)
    return Response(200, b"{}", [], b"application/json")


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = await start_server(_slow, "127.0.0.1", 0, lambda: 1 << 20)
    yield srv
    srv.close()


async def _connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


def _send(writer: asyncio.StreamWriter, wait_ms: int) -> None:
    writer.write(b"GET /wait/%d HTTP/1.1\r\nhost: x\r\n\r\n" % wait_ms)


async def _response(reader: asyncio.StreamReader) -> bytes:
    """The head of one response (its body is the two bytes ``{}``)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await reader.readexactly(2)
    return head


async def test_drain_answers_what_was_received_and_closes_every_connection(server: HttpServer) -> None:
    port = server.port
    idle_reader, idle_writer = await _connect(server)
    _send(idle_writer, 0)
    assert b"200" in await _response(idle_reader)  # kept alive, now idle
    busy_reader, busy_writer = await _connect(server)
    _send(busy_writer, 300)
    await asyncio.sleep(0.05)
    assert server.open_connections == 2

    drained = asyncio.ensure_future(server.drain(limit_s=10.0, quiet_s=1.0))
    assert await asyncio.wait_for(idle_reader.read(), 1) == b""  # the idle one is closed at once
    head = await _response(busy_reader)  # the request in flight is answered...
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head  # ...and told to go
    assert await asyncio.wait_for(busy_reader.read(), 1) == b""

    # A client that has not heard of the shutdown yet is answered once, not refused (the server
    # listens until no connection has opened or closed for quiet_s).
    late_reader, late_writer = await _connect(server)
    _send(late_writer, 0)
    assert b"connection: close" in await _response(late_reader)
    assert await drained == 0
    assert server.open_connections == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # and then it listens no more
    for writer in (idle_writer, busy_writer, late_writer):
        writer.close()


async def test_drain_gives_up_at_its_limit(server: HttpServer) -> None:
    _reader, writer = await _connect(server)
    _send(writer, 5000)
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await server.drain(limit_s=0.3, quiet_s=0.1) == 1  # one connection still busy
    assert loop.time() - started < 1.0
    writer.close()
