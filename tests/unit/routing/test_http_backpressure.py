"""What one client may make the router's HTTP server hold: bounded whatever the client does.

* A client that pipelines requests and never reads the answers: the server answered every request
  anyway and went on reading, so the answers piled up in the connection's write buffer (870 KB of
  pipelined ``GET /metrics`` grew it to 129 MB), and a connection paused for it never timed out.
  Now the server stops answering (and reading) while the write buffer is over its high-water mark,
  goes on once the client reads, and closes a connection whose writes stay stuck too long.
* A body trickled in a byte at a time, never silent for the read timeout, held the connection for
  as long as the client liked: now the body has a deadline of its own.
* Connections were accepted without a limit, until the process ran out of file descriptors: now
  those over the limit are answered 503 and closed at once.

Each test was written to fail before its fix.  No assertion is on speed: the bounds are on buffer
sizes and counts; the waits are for states, with generous limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from modelpool.routing import httpserver
from modelpool.routing.httpserver import HttpServer, Request, Response, start_server
from unit.routing.routertools import router_config, running_router, tier_variant

BIG = 64 * 1024
"""The body of each answer of :func:`_big`."""
HIGH = 256 * 1024
"""The write buffer's high-water mark the server sets."""
GET = b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n"
STATE_WAIT_S = 30.0
"""How long a test waits at most for a state (not a speed: a passing run gets there in far less)."""


def _counting_big() -> tuple[Callable[[Request], Awaitable[Response]], list[int]]:
    handled: list[int] = []

    async def big(request: Request) -> Response:
        handled.append(1)
        return Response(200, b"x" * BIG, [], b"text/plain")

    return big, handled


def _the_connection(server: HttpServer) -> Any:
    (conn,) = server._connections.open
    return conn


def _non_reading_client(port: int, small_buffer: bool = True) -> socket.socket:
    """A client socket; with ``small_buffer`` its kernel holds little of what it does not read (and
    reads slowly: the receive window stays small)."""
    sock = socket.create_connection(("127.0.0.1", port))
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def _send_some(sock: socket.socket, data: bytes, rounds: int = 200) -> int:
    """Send what the socket takes of ``data`` over ``rounds`` turns of the loop; the bytes sent."""
    sent = 0
    for _ in range(rounds):
        if sent == len(data):
            break
        with contextlib.suppress(BlockingIOError):
            sent += sock.send(data[sent:])
        await asyncio.sleep(0.005)
    return sent


async def _until(condition: Callable[[], bool], limit_s: float = STATE_WAIT_S) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _read_responses(sock: socket.socket, count: int) -> int:
    """Read from ``sock`` until ``count`` answers of :func:`_big` came (or it ends); how many came."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    one = len(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 65536\r\n\r\n") + BIG
    got = 0
    while got < count * one:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), STATE_WAIT_S)
        if not chunk:
            break
        got += len(chunk)
    return got // one


async def _pipelining_client_that_does_not_read() -> None:
    handler, handled = _counting_big()
    server = await start_server(handler, "127.0.0.1", 0, lambda: 1 << 20)
    sock = _non_reading_client(server.port, small_buffer=False)  # it reads them all later
    try:
        requests = 1000  # 65 MB of answers: far more than the kernel's socket buffers hold
        assert await _send_some(sock, GET * requests) == len(GET) * requests
        conn = _the_connection(server)
        transport = conn._transport
        # the server stops once its write buffer is over the high-water mark (before the fix it
        # answered on: stop waiting once the buffer shows it)
        await _until(
            lambda: getattr(conn, "_write_paused", False) or transport.get_write_buffer_size() > 2 * HIGH
        )
        for _ in range(20):  # whatever the loop does meanwhile, nothing more is answered
            await asyncio.sleep(0.01)
            assert transport.get_write_buffer_size() <= HIGH + BIG + 200
        assert conn._write_paused and not transport.is_reading()
        assert len(handled) < requests and conn._queue
        # the client reads: every request is answered, in order
        assert await _read_responses(sock, requests) == requests
        assert len(handled) == requests
    finally:
        sock.close()
        server.close()


async def test_a_pipelining_client_that_never_reads_holds_a_bounded_write_buffer() -> None:
    await _pipelining_client_that_does_not_read()


def test_the_same_bound_under_uvloop() -> None:
    """``serve()`` runs on uvloop: its transports must call the same flow control."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_pipelining_client_that_does_not_read())


async def test_the_routers_metrics_pipelined_unread_stay_bounded() -> None:
    """The review's case: 870 KB of pipelined, unauthenticated ``GET /metrics`` never read."""
    config = router_config("weighted", tier_variant("a", "small", ["http://127.0.0.1:9"]))
    async with running_router(config) as running:
        sock = _non_reading_client(running.port)
        try:
            await _send_some(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 25_000, rounds=400)
            conn = _the_connection(running.server)
            transport = conn._transport
            await _until(
                lambda: getattr(conn, "_write_paused", False) or transport.get_write_buffer_size() > 4 * HIGH
            )
            metrics = len((await _metrics_text(running.port)).encode()) + 200
            assert transport.get_write_buffer_size() <= HIGH + metrics
            assert conn._write_paused
        finally:
            sock.close()


async def _metrics_text(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), STATE_WAIT_S)
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


async def test_a_connection_whose_writes_stay_stuck_is_closed() -> None:
    handler, _ = _counting_big()
    server = await start_server(handler, "127.0.0.1", 0, lambda: 1 << 20, write_timeout_s=0.3)
    sock = _non_reading_client(server.port)
    try:
        await _send_some(sock, GET * 400)
        assert await _until(lambda: server.open_connections == 0)
    finally:
        sock.close()
        server.close()


async def _steady_reader_gets(close: bool) -> int:
    """Bytes of its body a client gets of an 8 MiB answer that it reads steadily but slowly (32 KiB at most
    every 10 ms: over 2.5 s in all, never 10 ms without reading) from a server whose write
    timeout is 1 s."""
    size = 8 * 1024 * 1024

    answer = Response(200, b"x" * size, [], b"text/plain")

    async def huge(request: Request) -> Response:
        return answer

    server = await start_server(huge, "127.0.0.1", 0, lambda: 1 << 20, write_timeout_s=1.0)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    got = 0
    try:
        sock.sendall(GET.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n") if close else GET)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATE_WAIT_S
        whole = len(httpserver.encode_response(answer, keep_alive=not close))
        while got < whole and loop.time() < deadline:
            await asyncio.sleep(0.01)
            try:
                chunk = sock.recv(32 * 1024)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        return got - (whole - size)
    finally:
        sock.close()
        server.close()


async def test_a_client_reading_a_long_answer_steadily_is_not_cut_off() -> None:
    """The write timeout ran from the moment the buffer passed the high-water mark until the
    client read it down, even while the client read all the time: an answer that took longer than
    the timeout to send was cut (6.5 of 8 MiB here).  Now only a connection whose unsent answers
    make no progress for the timeout is closed (the test above)."""
    assert await _steady_reader_gets(close=False) == 8 * 1024 * 1024


async def test_a_client_reading_a_long_last_answer_steadily_is_not_cut_off() -> None:
    """The same for a closing connection (``Connection: close``; a drain or an idle close alike):
    its unsent answers were given the write timeout in all."""
    assert await _steady_reader_gets(close=True) == 8 * 1024 * 1024


async def _answer_ok(request: Request) -> Response:
    return Response(200, b"{}")


async def test_a_body_trickled_in_past_the_body_timeout_gets_408() -> None:
    """One byte every 50 ms, never silent for the read timeout (2 s): held the connection until the
    body was complete, however long that took."""
    server = await start_server(
        _answer_ok, "127.0.0.1", 0, lambda: 1 << 20, read_timeout_s=2.0, body_timeout_s=0.5
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 400\r\n\r\n")
        answer = b""
        for _ in range(400):  # 20 s at most; the answer comes long before
            writer.write(b"a")
            try:
                answer = await asyncio.wait_for(reader.read(65536), 0.05)
            except TimeoutError:
                continue
            answer += await asyncio.wait_for(reader.read(), STATE_WAIT_S)
            break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b"the request body took over 0.5s" in answer
        writer.close()
        # a body sent at once is served (the deadline is for the body, not the connection)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(2):
            writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STATE_WAIT_S)
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(2)
            await asyncio.sleep(0.6)  # longer than the body timeout, between requests: fine
        writer.close()
    finally:
        server.close()


async def test_connections_over_the_limit_get_503_and_are_closed() -> None:
    server = await start_server(_answer_ok, "127.0.0.1", 0, lambda: 1 << 20, max_connections=2)
    try:
        kept = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STATE_WAIT_S)
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(2)
            kept.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        answer = await asyncio.wait_for(reader.read(), STATE_WAIT_S)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"connection: close" in answer and b"2 connections" in answer
        writer.close()
        assert server.open_connections == 2
        kept.pop().close()
        assert await _until(lambda: server.open_connections == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STATE_WAIT_S)).startswith(
            b"HTTP/1.1 200"
        )
        writer.close()
        kept.pop().close()
    finally:
        server.close()


def test_the_limits_have_documented_defaults() -> None:
    assert httpserver.WRITE_BUFFER_HIGH == HIGH
    assert httpserver.WRITE_TIMEOUT_S == 60.0
    assert httpserver.BODY_TIMEOUT_S == 60.0
    assert httpserver.MAX_CONNECTIONS == 4096


def test_the_max_connections_flag_reaches_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpool.routing import server
    from modelpool.routing.cli import main

    got: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: got.append(kwargs))
    assert main(["serve", "--config", "router.yaml", "--max-connections", "100"]) == 0
    assert main(["serve", "--config", "router.yaml"]) == 0
    assert [g["max_connections"] for g in got] == [100, 4096]
    with pytest.raises(SystemExit):
        main(["serve", "--config", "router.yaml", "--max-connections", "0"])
