"""The router's connection cap against the process's open-files limit (``RLIMIT_NOFILE``).

* ``fit_connections`` raises the soft limit to what ``--max-connections`` needs, never above the hard
  limit, and when the limit still falls short lowers the cap to what fits, with one warning that
  names the flag, the limits and the fix (the limit functions are injected: nothing here changes
  this process's limits). Before, nothing looked at the limit.
* A connection over the cap is answered 503 and then closed cleanly, even when hundreds wait at
  once with their requests sent: before, the answer was followed by a reset (the connection was
  closed with the request unread), which can cost the client the answer.
* The cap, the open connections and the refusals are in ``/metrics``.

The real process under a low limit: tests/integration/routing/test_router_fd_limit.py."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool.routing import fdlimit, server
from modelpool.routing.fdlimit import SPARE_FDS, FilesPlan, connection_cap, fit_connections, needed_fds
from modelpool.routing.httpserver import Request, Response, start_server
from unit.routing.routertools import metric_total, router_config, running_router, tier_variant

IN_USE = 12
"""Descriptors open at start in these tests (what a router process has, about)."""
INF = resource.RLIM_INFINITY
READ_WAIT_S = 10.0
"""How long a client waits at most for its answer (not a speed)."""


def _fit(
    max_connections: int, soft: int, hard: int, fail: Exception | None = None
) -> tuple[FilesPlan, list[tuple[int, int]]]:
    """``fit_connections`` against limits ``(soft, hard)``; the plan and the limits it set."""
    set_to: list[tuple[int, int]] = []

    def setrlimit(limits: tuple[int, int]) -> None:
        if fail is not None:
            raise fail
        set_to.append(limits)

    plan = fit_connections(
        max_connections, getrlimit=lambda: (soft, hard), setrlimit=setrlimit, count_open=lambda: IN_USE
    )
    return plan, set_to


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == fdlimit.__name__ and r.levelno >= logging.WARNING
    ]


# --- the limit ---------------------------------------------------------------------------------


def test_the_soft_limit_is_raised_to_what_the_connections_need(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, fdlimit.__name__)
    needed = IN_USE + SPARE_FDS + 2 * 4096
    plan, set_to = _fit(4096, 1024, 1048576)
    assert set_to == [(needed, 1048576)]
    assert (plan.max_connections, plan.soft, plan.soft_before, plan.warning) == (4096, needed, 1024, None)
    assert f"raised the open-files soft limit from 1024 to {needed}" in caplog.text
    assert not _warnings(caplog)
    # an unlimited hard limit is kept unlimited
    plan, set_to = _fit(4096, 1024, INF)
    assert set_to == [(needed, INF)] and plan.max_connections == 4096 and plan.hard is None


@pytest.mark.parametrize("soft", [9000, INF])
def test_a_soft_limit_that_holds_the_connections_is_left_alone(soft: int) -> None:
    plan, set_to = _fit(4096, soft, INF)
    assert set_to == []
    assert plan.max_connections == 4096 and plan.warning is None


def test_a_hard_limit_too_low_lowers_the_cap_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    plan, set_to = _fit(4096, 1024, 2048)
    assert set_to == [(2048, 2048)]  # up to the hard limit, no further
    cap = (2048 - IN_USE - SPARE_FDS) // 2
    assert plan.max_connections == cap == 890
    assert plan.soft == 2048
    (warning,) = _warnings(caplog)
    assert warning == plan.warning
    needed = needed_fds(4096, IN_USE)
    for part in (
        "--max-connections 4096",
        f"needs about {needed} file descriptors",
        "the soft limit is 2048 and the hard limit 2048",
        f"serving at most {cap} client connections at once (more are answered 503)",
        f"ulimit -n {needed}",
        f"docker run --ulimit nofile={needed}:{needed}",
        f"--max-connections {cap}",
    ):
        assert part in warning, part


def test_a_limit_of_64_serves_what_fits_in_it() -> None:
    plan, set_to = _fit(4096, 64, 64)
    assert set_to == []  # the hard limit: nothing to raise
    # a quarter of a small limit stays spare; two descriptors per connection
    assert plan.max_connections == (64 - IN_USE - 16) // 2 == 18
    # a cap that fits is kept as asked, without a warning
    assert _fit(10, 64, 64)[0].max_connections == 10
    assert _fit(10, 64, 64)[0].warning is None


def test_a_refused_raise_keeps_the_soft_limit_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    plan, _ = _fit(4096, 1024, 1048576, fail=ValueError("not allowed"))
    assert plan.soft == 1024
    assert plan.max_connections == (1024 - IN_USE - SPARE_FDS) // 2
    (warning,) = _warnings(caplog)
    assert f"raising the soft limit to {needed_fds(4096, IN_USE)} failed: not allowed" in warning


def test_the_cap_fits_every_limit_and_is_never_0() -> None:
    assert connection_cap(4096, 16, 14) == 1  # nothing fits: one connection, not none
    for limit in range(16, 10_000, 37):
        for in_use in (5, 40):
            cap = connection_cap(4096, limit, in_use)
            assert 1 <= cap <= 4096
            if cap > 1:  # its connections and their upstream ones fit, with spare
                assert in_use + 2 * cap + min(SPARE_FDS, limit // 4) <= limit
            assert connection_cap(4096, limit + 37, in_use) >= cap
    assert connection_cap(4096, None, 40) == 4096


def test_serve_starts_the_router_with_the_cap_that_fits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``router serve`` fits the cap to the limit before it listens, and exports the limit."""
    config = tmp_path / "router.json"
    config.write_text('{"generation": 1, "pool": "p", "mode": "weighted", "modelName": "m", "variants": '
                      '[{"name": "s", "tier": "small", "tritonModel": "m_s", "cost": 1, "weight": 1, '
                      '"endpoints": ["http://127.0.0.1:9"]}]}')  # fmt: skip
    asked: list[int] = []
    plan = FilesPlan(4096, 7, 64, 64, 64, IN_USE, needed_fds(4096, IN_USE), "too low")
    monkeypatch.setattr(server, "fit_connections", lambda n: asked.append(n) or plan)
    started: list[Any] = []

    class Started(Exception):
        pass

    async def start_router(*args: Any) -> None:
        started.append(args)
        raise Started

    monkeypatch.setattr(server, "start_router", start_router)
    with pytest.raises(Started):
        server.serve(config, "127.0.0.1", 0, None, max_connections=4096)
    assert asked == [4096]
    assert started[0][-1] == 7  # the cap that fits, not the 4096 asked for


# --- connections over the cap ----------------------------------------------------------------


async def _ok(request: Request) -> Response:
    return Response(200, b"ok", [], b"text/plain")


def _read_answer(sock: socket.socket) -> tuple[bytes, str]:
    """What the client reads until the answer is whole (``kept``: a 200, the connection open), the
    end (``end``) or a reset (``reset``)."""
    sock.settimeout(READ_WAIT_S)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got, "end"
            got += chunk
            if got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nok"):
                return got, "kept"
    except ConnectionResetError:
        return got, "reset"


async def _a_burst_over_the_cap() -> None:
    cap, clients = 4, 60
    srv = await start_server(_ok, "127.0.0.1", 0, lambda: 1 << 20, max_connections=cap)
    socks: list[socket.socket] = []
    try:
        # the loop does not run meanwhile: every connection waits, its request sent, and the
        # server finds them all at once (as a router paused a moment does)
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            socks.append(sock)
        answers = await asyncio.gather(*(asyncio.to_thread(_read_answer, s) for s in socks))
        outcomes = Counter((got.split(b"\r\n", 1)[0], how) for got, how in answers)
        # before: (b"HTTP/1.1 503 Service Unavailable", "reset") for every refused one
        assert outcomes == {
            (b"HTTP/1.1 200 OK", "kept"): cap,
            (b"HTTP/1.1 503 Service Unavailable", "end"): clients - cap,
        }
        refused = next(got for got, how in answers if how == "end")
        assert b"connection: close" in refused
        assert refused.endswith(b'{"error":"the router serves at most 4 connections at once; retry"}')
        assert srv.refused_connections() == {"max_connections": clients - cap}
        assert srv.open_connections == cap
    finally:
        for sock in socks:
            sock.close()
        srv.close()


async def test_a_burst_over_the_cap_gets_503_and_a_clean_end() -> None:
    await _a_burst_over_the_cap()


def test_the_same_under_uvloop() -> None:
    """``serve()`` runs on uvloop, whose own server answered the same way."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_a_burst_over_the_cap())


async def test_the_cap_and_the_refusals_are_in_the_metrics() -> None:
    config = router_config("weighted", tier_variant("s", "small", ["http://127.0.0.1:9"]))
    async with (
        running_router(config, max_connections=2) as router,
        httpx.AsyncClient(timeout=READ_WAIT_S) as held,
    ):
        assert (await held.get(f"{router.url}/v2/health/live")).status_code == 200
        async with httpx.AsyncClient(timeout=READ_WAIT_S) as second:
            first = (await second.get(f"{router.url}/metrics")).text
            async with httpx.AsyncClient(timeout=READ_WAIT_S) as third:
                refused = await third.get(f"{router.url}/metrics")
            after = (await second.get(f"{router.url}/metrics")).text
    assert metric_total(first, "modelpool_router_client_connections_max{") == 2
    assert metric_total(first, "modelpool_router_client_connections{") == 2
    assert metric_total(first, "modelpool_router_client_connections_refused_total{") == 0
    assert 'reason="out_of_files"' in first  # at 0, so that a rate exists before the first
    assert refused.status_code == 503
    assert refused.json() == {"error": "the router serves at most 2 connections at once; retry"}
    over_cap = 'modelpool_router_client_connections_refused_total{pool="p",reason="max_connections"}'
    assert metric_total(after, over_cap) == 1
    assert "modelpool_router_open_files_limit" not in after  # only ``router serve`` sets it


class _Transport(asyncio.Transport):
    """Just enough of a transport for ``connection_made``."""

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_a_connection_counts_once_from_connection_made_on() -> None:
    """An accepted connection counted in ``opening`` until its accept task ended, and in ``open``
    from ``connection_made`` on, which may run (and answer a request) first: a connection opened
    in between found the first counted twice and was refused one below the cap (2 of 6 trials with
    a cap of 3 and one kept-alive connection)."""
    from modelpool.routing import httpserver

    loop = asyncio.get_running_loop()
    connections = httpserver._Connections(loop, 1.0, 1.0, 1.0, 1.0, 1.0, max_connections=2)
    protocol = httpserver._HttpProtocol(_ok, lambda: 1024, loop, connections)
    protocol.opening = True  # as the acceptor counts it
    connections.opening += 1
    protocol.connection_made(_Transport())
    assert (len(connections.open), connections.opening) == (1, 0)
    assert not connections.full()  # one more fits under a cap of 2
    sock = socket.socket()
    try:
        done: asyncio.Future[object] = loop.create_future()
        done.set_result(None)
        acceptor = httpserver._Acceptor(loop, [], connections, lambda: protocol)
        acceptor._connected(cast_task(done), protocol, sock)  # the accept task ends after it
        assert connections.opening == 0  # not counted down twice
    finally:
        sock.close()
        protocol.connection_lost(None)
        acceptor.close()


def cast_task(future: asyncio.Future[object]) -> asyncio.Task[object]:
    """A finished future where ``_connected`` takes the finished accept task (it only asks whether
    it was cancelled or failed)."""
    return future  # type: ignore[return-value]


_SOCKET = socket.socket


def _no_ipv6(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
    """``socket.socket`` on a kernel booted with ``ipv6.disable=1``."""
    if family == socket.AF_INET6:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    return _SOCKET(family, *args, **kwargs)


async def test_a_host_with_an_address_family_the_kernel_lacks_listens_on_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``localhost`` (or all interfaces) resolving to ``::1`` and 127.0.0.1 on a node without IPv6:
    the loop's ``create_server`` skipped the family it cannot make sockets for; the server's own
    listening failed the router's start with EAFNOSUPPORT."""
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "socket", _no_ipv6)
    srv = await start_server(_ok, "localhost", 0, lambda: 1 << 20)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{srv.port}/")).status_code == 200
    finally:
        srv.close()
    monkeypatch.setattr(loop, "getaddrinfo", lambda *a, **k: _only_v6())
    with pytest.raises(OSError, match="no address of 'localhost' can be listened on"):
        await start_server(_ok, "localhost", 0, lambda: 1 << 20)


async def _only_v6() -> list[Any]:
    return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))]
