"""What the reader reads of an answer: at most ``MAX_ANSWER_BYTES`` and for at most ``timeout_s``
per query, whatever the server at ``spec.scaling.prometheusURL`` (a tenant's choice) sends.

Before the fix httpx read whole answers, with a timeout per read: an endless body grew the
operator by about 900 MB in 4 s (its chart limit is 512Mi: killed at every pass, for every
namespace), and a body dripped a byte at a time never ended. The servers here are raw asyncio
servers on 127.0.0.1 that write what a well-behaved HTTP server never would.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from modelpool.scaling.prometheus_reader import PrometheusError, PrometheusReader

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FOUR_MIB = 4 * 1024 * 1024
CHUNK = b" " * (1 << 20)  # JSON whitespace: a body that is valid so far
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A server on 127.0.0.1 answering every connection with ``handler``; its base URL. The
    handlers still running at the end are cancelled (an endless body never ends by itself)."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, ConnectionError):
                await task
        await server.wait_closed()


async def _problem(url: str, guard_s: float, timeout_s: float = 5.0) -> tuple[str, float]:
    """The reader's error for one query, and how long it took (at most ``guard_s``: the test fails
    with TimeoutError where the reader would go on reading)."""
    reader = PrometheusReader(url, timeout_s=timeout_s)
    start = time.monotonic()
    try:
        with pytest.raises(PrometheusError) as err:
            await asyncio.wait_for(reader.query("up"), guard_s)
    finally:
        await reader.aclose()
    return str(err.value), time.monotonic() - start


async def test_a_body_larger_than_the_cap_is_refused_once_the_cap_is_read() -> None:
    """12 MiB of a chunked body, then nothing (the connection stays open): the reader stops at
    4 MiB. Before, it read all 12 MiB and then waited 5 s for the rest ("unreachable: ReadTimeout")."""

    async def twelve_mib_then_silence(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n")
        for _ in range(12):
            writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            await writer.drain()
        await asyncio.sleep(3600)

    async with serving(twelve_mib_then_silence) as url:
        message, took = await _problem(url, guard_s=20)
    assert f"answer larger than {FOUR_MIB} bytes" in message, message
    assert took < 4, took


async def test_an_endless_body_is_refused_without_growing_the_operator() -> None:
    """The review's proof (huge_body_fast.py): 1 MiB chunks as fast as the socket takes them."""

    async def endless(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            await writer.drain()

    async with serving(endless) as url:
        # The old reader read ~900 MB in 4 s here: the guard stops it well before that.
        message, took = await _problem(url, guard_s=1.5)
    assert "answer larger than" in message, message
    assert took < 1.5


async def test_a_declared_length_above_the_cap_is_refused_before_the_body() -> None:
    async def huge_length(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"content-length: 100000000000\r\n\r\n" + CHUNK)
        await writer.drain()
        await asyncio.sleep(3600)

    async with serving(huge_length) as url:
        message, took = await _problem(url, guard_s=20)
    assert f"answer larger than {FOUR_MIB} bytes" in message, message
    assert took < 4, took


async def test_a_body_dripped_within_each_read_timeout_ends_at_the_deadline() -> None:
    """A byte every 0.2 s never trips a timeout per read (the old one): the deadline is per query."""

    async def drip(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"transfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\n \r\n")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with serving(drip) as url:
        message, took = await _problem(url, guard_s=6, timeout_s=1.0)
    assert "did not answer within 1s" in message and "timed out" in message, message
    assert 0.9 < took < 3, took


async def test_a_compressed_body_is_refused_not_inflated() -> None:
    """The reader asks for an uncompressed answer; a gzip body (48 MiB of zeros in ~48 KiB) would
    be inflated whole by httpx before any cap could count it. Before, it was (then "without JSON")."""
    bomb = gzip.compress(b"0" * (48 << 20), compresslevel=9)

    async def gzipped(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb) + bomb)
        await writer.drain()
        await asyncio.sleep(3600)

    async with serving(gzipped) as url:
        message, _ = await _problem(url, guard_s=20)
    assert "compressed" in message and "without JSON" not in message, message


async def test_an_answer_within_the_cap_is_read_whole() -> None:
    """A large but realistic answer (a long range vector; see MAX_ANSWER_BYTES) still reads."""
    points = ",".join(f'[{1_700_000_000 + i / 2},"{i}.123456789"]' for i in range(7_300))
    matrix = f'{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{points}]}}]}}'
    body = f'{{"status":"success","data":{matrix}}}'.encode()

    async def ok(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with serving(ok) as url:
        reader = PrometheusReader(url)
        try:
            result = await asyncio.wait_for(reader.query("up"), 10)
        finally:
            await reader.aclose()
    assert len(result[0]["values"]) == 7_300
