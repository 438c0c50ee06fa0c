"""The router's HTTP server drops no request it has received: on shutdown (``HttpServer.drain``) or a
client's half-close; it bounds a request's head and how long a client may stall mid-request."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from modelpool.routing.httpserver import MAX_HEAD_BYTES, HttpServer, Request, Response, start_server


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


async def test_a_client_that_half_closes_after_its_last_request_gets_every_answer(server: HttpServer) -> None:
    """Some clients shut their sending side once the request is out (``nc -N``, HTTP/1.0 tools).
    Until the twelfth session the server closed on that EOF and dropped the requests in flight.
    After a request that says it is the last (``Connection: close``, or HTTP/1.0), such an EOF is a
    half-close; after a keep-alive request it is a client that left (the next test)."""
    for last in (
        b"GET /wait/0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /wait/0 HTTP/1.0\r\n\r\n",
    ):
        reader, writer = await _connect(server)
        _send(writer, 200)
        writer.write(last)  # pipelined behind it
        writer.write_eof()
        first, second = await _response(reader), await _response(reader)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in second
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()
    idle_reader, idle_writer = await _connect(server)
    idle_writer.write_eof()  # nothing sent: closed at once
    assert await asyncio.wait_for(idle_reader.read(), 1) == b""
    idle_writer.close()


async def test_a_client_that_leaves_cancels_the_request_it_waits_for() -> None:
    """A client that closes its connection (an EOF after a keep-alive request, or a reset) while
    its request is answered: the handler is cancelled at once, not run to its end for nobody."""
    cancelled: list[bytes] = []

    async def handler(request: Request) -> Response:
        try:
            return await _slow(request)
        except asyncio.CancelledError:
            cancelled.append(request.path)
            raise

    srv = await start_server(handler, "127.0.0.1", 0, lambda: 1 << 20)
    try:
        for reset in (False, True):
            _reader, writer = await _connect(srv)
            _send(writer, 5000)
            await asyncio.sleep(0.1)
            if reset:  # SO_LINGER 0: the close sends RST
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            for _ in range(50):
                if len(cancelled) == reset + 1:
                    break
                await asyncio.sleep(0.02)
            assert cancelled == [b"/wait/5000"] * (reset + 1)
        assert srv.open_connections == 0
    finally:
        srv.close()


async def test_request_heads_over_the_limit_get_431_in_one_chunk_or_many(server: HttpServer) -> None:
    for chunks in (1, 40):
        reader, writer = await _connect(server)
        head = b"GET /wait/0 HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
        step = len(head) // chunks + 1
        for i in range(0, len(head), step):
            writer.write(head[i : i + step])
            await writer.drain()
            await asyncio.sleep(0)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        assert b"over the limit of 65536 bytes" in answer
        writer.close()
    reader, writer = await _connect(server)
    writer.write(b"GET /wait/0 HTTP/1.1\r\nhost: x\r\nx-fine: " + b"a" * 60000 + b"\r\n\r\n")
    assert (await _response(reader)).startswith(b"HTTP/1.1 200")  # under the limit: served
    writer.close()


async def test_a_client_that_stalls_mid_request_gets_408_and_a_slow_one_is_served() -> None:
    srv = await start_server(_slow, "127.0.0.1", 0, lambda: 1 << 20, read_timeout_s=0.3)
    try:
        for partial in (
            b"GET /wait/0 HTTP/1.1\r\nhost: x\r\n",  # the head never ends
            b"POST /wait/0 HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345",  # nor the body
        ):
            reader, writer = await _connect(srv)
            writer.write(partial)
            answer = await asyncio.wait_for(reader.read(), 3)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
            assert b"sent nothing for 0.3s in the middle of its request" in answer
            writer.close()
        # a client slower than the timeout in total, but never silent that long, is served
        reader, writer = await _connect(srv)
        for byte in b"GET /wait/0 HTTP/1.1\r\nhost: x\r\n\r\n"[:8]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        writer.write(b"GET /wait/0 HTTP/1.1\r\nhost: x\r\n\r\n"[8:])
        assert (await _response(reader)).startswith(b"HTTP/1.1 200")
        # and an idle keep-alive connection between requests is left open
        await asyncio.sleep(0.8)
        _send(writer, 0)
        assert (await _response(reader)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        srv.close()


async def test_idle_keep_alive_connections_are_closed_and_busy_ones_kept() -> None:
    """An idle client connection stayed open for as long as the client kept it (forever for a
    client that forgot it): now one with no request for the idle timeout is closed."""
    srv = await start_server(_slow, "127.0.0.1", 0, lambda: 1 << 20, idle_timeout_s=0.4)
    try:
        never = await _connect(srv)  # opened, nothing sent
        idle_reader, idle_writer = await _connect(srv)
        _send(idle_writer, 0)
        assert (await _response(idle_reader)).startswith(b"HTTP/1.1 200")
        busy_reader, busy_writer = await _connect(srv)
        _send(busy_writer, 1000)  # in flight longer than the idle timeout: not idle
        assert await asyncio.wait_for(idle_reader.read(), 2) == b""
        assert await asyncio.wait_for(never[0].read(), 2) == b""
        assert (await _response(busy_reader)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.2)  # under the timeout since that response: still open
        _send(busy_writer, 0)
        assert (await _response(busy_reader)).startswith(b"HTTP/1.1 200")
        for writer in (never[1], idle_writer, busy_writer):
            writer.close()
    finally:
        srv.close()


async def test_a_head_that_trickles_in_past_the_head_timeout_gets_408() -> None:
    """A client sending its head a byte at a time, never silent for the read timeout, held the
    connection as long as it liked."""
    srv = await start_server(_slow, "127.0.0.1", 0, lambda: 1 << 20, read_timeout_s=5.0, head_timeout_s=0.5)
    try:
        reader, writer = await _connect(srv)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for byte in b"GET /wait/0 HTTP/1.1\r\nhost: x\r\n":  # 34 bytes over 1.7 s
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        answer = await asyncio.wait_for(reader.read(), 3)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
        assert b"request line and headers took over 0.5s" in answer
        assert loop.time() - started < 3.0
        writer.close()
    finally:
        srv.close()


async def test_closed_client_connections_are_freed_without_the_cycle_collector(server: HttpServer) -> None:
    """``serve()`` collects cycles rarely (thresholds 50,000): a client connection's protocol in a
    reference cycle with its HTTP parser stayed in memory until a collection, one per connection
    of a client that does not keep connections alive (measured: 200 of 200 left)."""
    import gc
    import weakref

    from modelpool.routing import httpserver

    made: list[weakref.ref[httpserver._HttpProtocol]] = []
    original = httpserver._HttpProtocol.connection_made

    def connection_made(self: httpserver._HttpProtocol, transport: asyncio.BaseTransport) -> None:
        made.append(weakref.ref(self))
        original(self, transport)

    gc.collect()
    gc.disable()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(httpserver._HttpProtocol, "connection_made", connection_made)
            for _ in range(20):
                reader, writer = await _connect(server)
                writer.write(b"GET /wait/0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                assert (await reader.read()).startswith(b"HTTP/1.1 200")
                writer.close()
                await writer.wait_closed()
        await asyncio.sleep(0.05)  # the server's connection_lost callbacks run
        assert len(made) == 20 and [ref for ref in made if ref() is not None] == []
    finally:
        gc.enable()
