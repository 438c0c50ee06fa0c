"""``Expect: 100-continue`` on the router's HTTP server: the client is told to send its body (it
was never told: curl waited a second before each upload over 1 MiB), unless the request is refused
already or the 100 would come before responses the connection still owes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelpool.routing.httpserver import HttpServer, Request, Response, start_server

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def _handler(request: Request) -> Response:
    """``/wait/<ms>`` answers after that long; the body says how many bytes the request had."""
    if request.path.startswith(b"/wait/"):
        await asyncio.sleep(int(request.path.rsplit(b"/", 1)[1]) / 1000)
    return Response(200, b'{"bytes":%d}' % len(request.body))


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = await start_server(_handler, "127.0.0.1", 0, lambda: 4 << 20)
    yield srv
    srv.close()


def _head(
    length: int, expect: bytes = b"100-continue", version: bytes = b"1.1", path: bytes = b"/up"
) -> bytes:
    return b"POST %s HTTP/%s\r\nhost: x\r\ncontent-length: %d\r\nexpect: %s\r\n\r\n" % (
        path, version, length, expect,
    )  # fmt: skip


async def _nothing_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue"])
async def test_the_client_is_told_to_send_its_body(server: HttpServer, value: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(_head(5, value))
    assert await asyncio.wait_for(reader.readexactly(len(CONTINUE)), 2) == CONTINUE
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(11) == b'{"bytes":5}'
    writer.close()


async def test_no_100_when_the_body_came_with_the_headers(server: HttpServer) -> None:
    """A client that does not wait for the 100 has sent its body already: the answer is all it gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(_head(5) + b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()


async def test_a_refused_request_gets_its_final_answer_instead(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(_head(5 << 20))  # over the 4 MiB limit
    answer = await asyncio.wait_for(reader.read(), 3)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:60]
    assert CONTINUE not in answer
    writer.close()


async def test_http_1_0_expectations_are_ignored(server: HttpServer) -> None:
    """RFC 9110, 10.1.1: a server that receives 100-continue in an HTTP/1.0 request ignores it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(_head(5, version=b"1.0"))
    assert await _nothing_within(reader, 0.3)
    writer.write(b"hello")
    assert (await asyncio.wait_for(reader.read(), 2)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_the_100_waits_for_the_responses_owed_before_it(server: HttpServer) -> None:
    """A 100 written while an earlier pipelined request is still being answered would read as
    that request's interim response: it goes out after that response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /wait/300 HTTP/1.1\r\nhost: x\r\n\r\n" + _head(5))
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert first.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(11) == b'{"bytes":0}'
    assert await asyncio.wait_for(reader.readexactly(len(CONTINUE)), 2) == CONTINUE
    writer.write(b"hello")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_curl_uploads_over_a_mebibyte_without_waiting_a_second(
    server: HttpServer, tmp_path: Path
) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 MiB and waits up to 1 s for the 100
    (then sends the body anyway): the server answers it with the 100, so curl never waits it out.
    curl's own trace (``-v``) shows the expectation it sent and the 100 it received."""
    body = tmp_path / "body.bin"
    body.write_bytes(b"x" * 1_500_000)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-o", "-", "--data-binary", f"@{body}", f"http://127.0.0.1:{server.port}/up",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, trace = await proc.communicate()
    assert proc.returncode == 0, trace.decode(errors="replace")
    assert out == b'{"bytes":1500000}'
    lines = [line.strip() for line in trace.decode(errors="replace").splitlines()]
    assert "> Expect: 100-continue" in lines, lines  # curl asked
    assert "< HTTP/1.1 100 Continue" in lines, lines  # and was told to send its body
    assert lines.index("< HTTP/1.1 100 Continue") < lines.index("< HTTP/1.1 200 OK"), lines
