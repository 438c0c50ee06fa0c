"""EndpointClient: one shared deadline timer per endpoint (each request still times out on time),
and closing it keeps no connection open, not even one that was in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from modelpool.routing.upstream import EndpointClient, UpstreamTimeout

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@dataclass
class SlowServer:
    url: str
    open_connections: int = 0


@pytest.fixture
async def slow_server() -> AsyncIterator[SlowServer]:
    """Answers every request after the number of milliseconds in its path (``/wait/300``), and
    counts the client connections it has open."""
    state = SlowServer(url="")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.open_connections += 1
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
            state.open_connections -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
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


async def test_each_request_times_out_at_its_own_deadline(slow_server: SlowServer) -> None:
    """The deadlines are the feature: each request gives up at its own deadline, not before (the
    lower bounds) and not at another request's (the order they end in). The upper bounds, ten
    times the deadline, only catch a request that hangs."""
    client = EndpointClient(slow_server.url)
    finished: list[str] = []

    async def timed(name: str, wait_ms: int, limit_s: float) -> tuple[str, float]:
        result = await _timed(client, wait_ms, limit_s)
        finished.append(name)
        return result

    try:
        # a long deadline arms the timer first; a shorter one started later must not wait for it
        long_ok, short_late, quick_ok = await asyncio.gather(
            timed("long", 300, 2.0), timed("short", 1000, 0.1), timed("quick", 10, 2.0)
        )
        assert long_ok[0] == "200" and long_ok[1] > 0.25  # answered after the server's 300 ms
        assert short_late[0] == "no answer within 100 ms" and 0.09 < short_late[1] < 10 * 0.1
        assert quick_ok[0] == "200"
        # the short deadline (100 ms) fired between the quick answer (10 ms) and the long one
        # (300 ms): it did not wait for the long request's 2 s deadline, which armed the timer
        assert finished == ["quick", "short", "long"]
        # after the timer fired (and found nothing else due), later deadlines still fire
        for _ in range(2):
            outcome, took = await _timed(client, 1000, 0.05)
            assert outcome == "no answer within 50 ms" and 0.04 < took < 10 * 0.05
        assert (await _timed(client, 0, 1.0))[0] == "200"  # the client still works
    finally:
        client.close()


async def _until_closed(server: SlowServer, seconds: float = 2.0) -> int:
    for _ in range(int(seconds * 100)):
        if server.open_connections == 0:
            break
        await asyncio.sleep(0.01)
    return server.open_connections


async def test_close_keeps_no_connection_open_and_lets_requests_in_flight_finish(
    slow_server: SlowServer,
) -> None:
    """A Triton that got SIGTERM waits for its open client connections until its exit timeout:
    a closed client must not keep one, idle or in flight."""
    client = EndpointClient(slow_server.url)
    await asyncio.gather(*(client.request(b"GET", b"/wait/50", [], b"", 2.0) for _ in range(3)))
    assert slow_server.open_connections == 3  # kept alive for reuse
    in_flight = asyncio.ensure_future(client.request(b"GET", b"/wait/300", [], b"", 2.0))
    await asyncio.sleep(0.1)
    client.close()  # the replica left its EndpointSlice while one request was in flight
    assert await _until_closed(slow_server, 0.15) == 1  # the idle ones at once
    assert (await in_flight).status == 200  # the one in flight still gets its answer...
    assert await _until_closed(slow_server) == 0  # ...and its connection is closed, not kept
    assert (await client.request(b"GET", b"/wait/0", [], b"", 1.0)).status == 200  # still usable
    assert await _until_closed(slow_server) == 0


async def test_closed_and_failed_connections_are_freed_without_the_cycle_collector(
    slow_server: SlowServer,
) -> None:
    """``serve()`` freezes the heap and collects cycles rarely (thresholds 50,000): a connection
    that stayed in a reference cycle with its HTTP parser until a collection let a router whose
    pushes replace endpoints grow about 2.4 KB per push, up to ~11 MB before each collection."""
    import gc
    import socket
    import weakref

    from modelpool.routing.upstream import _Connection

    loop = asyncio.get_running_loop()
    made: list[weakref.ref[_Connection]] = []

    def factory() -> _Connection:
        conn = _Connection(loop)
        made.append(weakref.ref(conn))
        return conn

    with socket.socket() as probe:  # a port nothing listens on: a connect that fails
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    port = int(slow_server.url.rsplit(":", 1)[1])

    async def round_trip(conn: _Connection) -> int:
        answered: asyncio.Future[int] = loop.create_future()
        conn.send(b"GET /wait/0 HTTP/1.1\r\nhost: x\r\n\r\n", loop.time() + 2, 2.0,
                  lambda resp, _err: answered.set_result(resp.status if resp else 0))  # fmt: skip
        return await answered

    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            _, conn = await loop.create_connection(factory, "127.0.0.1", port)
            assert await round_trip(conn) == 200
            conn.close()
            del conn
            with pytest.raises(OSError):  # uvloop makes the protocol before connecting, asyncio after
                await loop.create_connection(factory, "127.0.0.1", closed_port)
        await asyncio.sleep(0.05)  # the transports' connection_lost callbacks run
        alive = [ref for ref in made if ref() is not None]
        assert len(made) >= 10 and alive == []
    finally:
        gc.enable()
