"""A router under a low open-files limit (``RLIMIT_NOFILE``), as a container's default soft limit of
1,024 can be under the default cap of 4,096 connections: the real ``router serve`` process, started
under ``prlimit`` with a soft and hard limit of 64, in front of real tritonservers.

Before, nothing looked at the limit: once ``accept()`` failed with EMFILE, uvloop (libuv) closed
every waiting connection unanswered, and connections to Triton failed for want of descriptors (one
run of the first test: 24 clients got 200, 174 a reset with no answer, 2 a 503 of a failed upstream
connection). Now the router fits its cap to the limit, says so in one warning, answers each
connection over it 503 with the cap's message, and goes on serving; and a server whose cap the
limit cannot hold answers 503 naming the limit where ``accept()`` fails.

Each test starts processes on 127.0.0.1 ports: run under ``flock /tmp/cluster.lock``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest

import modelpool
from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.process import RouterProcess
from unit.routing.routertools import metric_total

from .conftest import router_config, text_request

pytestmark = pytest.mark.triton

FILES = 64
"""The open-files limit, soft and hard, the processes run under."""
CLIENTS = 200
"""Client connections open at once: far more than ``FILES`` descriptors hold."""
WAIT_S = 30.0
"""How long a client waits at most for its answer (not a speed: a passing run takes far less)."""
_OPERATOR_ROOT = Path(modelpool.__file__).resolve().parents[1]
"""Where the ``modelpool`` this test imports lives: the server process imports the same."""


class LimitedRouter(RouterProcess):
    """``python -m modelpool.routing serve`` under ``prlimit --nofile=FILES:FILES``."""

    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={FILES}:{FILES}", "--", *super().command()]


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Clients:
    """``CLIENTS`` connections that each send one request at once; those served are kept open
    until every client has its answer, so that the router holds all of them at once."""

    def __init__(self) -> None:
        self.answered = 0
        self.all_answered = asyncio.Event()

    def _answered(self) -> None:
        self.answered += 1
        if self.answered == CLIENTS:
            self.all_answered.set()

    async def one(self, port: int, request: bytes) -> tuple[str, bytes]:
        """Served: ``("200", b"")``. Refused: ``("503", body)`` once the router has closed the
        connection. Anything else, ``(what happened, what came)``: no answer is a failure."""
        got = b""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            length = re.search(rb"content-length: (\d+)", got)
            assert length is not None, got
            body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), WAIT_S)
            status = got.split(b" ", 2)[1].decode()
            self._answered()
            if status == "200":
                await asyncio.wait_for(self.all_answered.wait(), WAIT_S)
                writer.close()
                return "200", b""
            # the router closes a refused connection: the end, not a reset, follows the answer
            rest = await asyncio.wait_for(reader.read(), WAIT_S)
            writer.close()
            return (status, body) if not rest else (f"{status} then {rest[:40]!r}", body)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as err:
            self._answered()
            return type(err).__name__, got[:80]


async def _burst(port: int, request: bytes, pid: int) -> Counter[tuple[str, bytes]]:
    """``CLIENTS`` connections opened, and their requests sent, while the server is stopped
    (SIGSTOP), as a server throttled or paused a moment finds them all waiting at once; then it
    goes on (SIGCONT). What the clients got, counted."""
    clients = _Clients()
    os.kill(pid, signal.SIGSTOP)
    try:
        running = [asyncio.ensure_future(clients.one(port, request)) for _ in range(CLIENTS)]
        await asyncio.sleep(1.0)  # every connection is in the listen queue, its request sent
    finally:
        os.kill(pid, signal.SIGCONT)
    return Counter(await asyncio.gather(*running))


async def _alone(port: int) -> tuple[asyncio.StreamWriter, int]:
    """A keep-alive connection to the router, once it is the router's only one (the readiness
    check's may still be closing): the connection, to keep open, and the router's cap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: router\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        length = re.search(rb"content-length: (\d+)", head)
        assert head.startswith(b"HTTP/1.1 200") and length is not None, head
        metrics = (await reader.readexactly(int(length.group(1)))).decode()
        if metric_total(metrics, "modelpool_router_client_connections{") == 1 or loop.time() > deadline:
            return writer, int(metric_total(metrics, "modelpool_router_client_connections_max{"))
        await asyncio.sleep(0.05)


async def test_a_router_under_a_low_open_files_limit_answers_503_over_what_fits(
    tritons: dict[str, TritonProcess],
) -> None:
    router = LimitedRouter(router_config(tritons, "weighted")).start()
    try:
        pid = router.pid
        assert pid is not None
        infer = _request("/v2/models/intents/infer", json.dumps(text_request("card lost")).encode())
        # the router's only connection, kept open: the burst gets the rest of the cap
        kept, cap = await _alone(router.port)
        outcomes = await _burst(router.port, infer, pid)
        kept.close()
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            # it keeps serving: the connections over the cap were refused, not the router broken
            after = await http.post(f"{router.url}/v2/models/intents/infer", json=text_request("after"))
            metrics = (await http.get(f"{router.url}/metrics")).text
        log = router.log_path.read_text(errors="replace")
    finally:
        router.stop()
    assert after.status_code == 200, after.text
    message = {"error": f"the router serves at most {cap} connections at once; retry"}
    refused = Counter({body: n for (status, body), n in outcomes.items() if status == "503"})
    assert sum(outcomes.values()) == CLIENTS
    # each connection got an answer: 200 for as many as the cap leaves (one is the kept one), 503
    # with the cap's message for the rest (before, one run: 24 got 200, 174 a reset, no answer)
    assert outcomes[("200", b"")] == cap - 1, outcomes
    assert [json.loads(body) for body in refused] == [message], outcomes
    assert refused.total() == CLIENTS - (cap - 1)
    # the cap fits the limit: the clients' and their upstream connections' descriptors and spare
    assert 1 <= cap < FILES // 2
    assert metric_total(metrics, "modelpool_router_open_files_limit{") == FILES
    refusals = 'modelpool_router_client_connections_refused_total{pool="intents",reason="max_connections"}'
    assert metric_total(metrics, refusals) == refused.total()
    # one warning says why, with the limit, the flag and the fix
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, log[-3000:]
    assert "--max-connections 4096" in warnings[0]
    assert f"the soft limit is {FILES} and the hard limit {FILES}" in warnings[0]
    assert f"serving at most {cap} client connections at once" in warnings[0]
    assert "ulimit -n" in warnings[0] and "nofile" in warnings[0]


_SERVER = textwrap.dedent(
    """
    import asyncio, logging, sys
    import uvloop
    from modelpool.routing.httpserver import Response, start_server

    async def ok(request):
        return Response(200, b"ok", [], b"text/plain")

    async def main():
        # a cap far above what the limit holds: accept() itself runs out of descriptors
        server = await start_server(ok, "127.0.0.1", 0, lambda: 1 << 20, max_connections=4096)
        print(server.port, flush=True)
        await asyncio.sleep(3600)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    uvloop.run(main())
    """
)


async def test_a_server_out_of_file_descriptors_answers_503_naming_the_limit() -> None:
    """The HTTP server with a cap the limit cannot hold (as when the upstream connections take
    more descriptors than the router planned for): ``accept()`` fails with EMFILE, and each
    connection it could not take is answered 503 through a reserve descriptor, not closed
    unanswered."""
    proc = await asyncio.create_subprocess_exec(
        "prlimit", f"--nofile={FILES}:{FILES}", "--", sys.executable, "-c", _SERVER,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(_OPERATOR_ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
        outcomes = await _burst(port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", proc.pid)
        # it keeps serving once the connections are gone (the server sees them close first)
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            for _ in range(100):
                after = await http.get(f"http://127.0.0.1:{port}/")
                if after.status_code == 200:
                    break
                await asyncio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    log = err.decode(errors="replace")
    assert after.status_code == 200
    statuses: Counter[str] = Counter()
    for (status, _), count in outcomes.items():
        statuses[status] += count
    assert statuses["200"] + statuses["503"] == CLIENTS, outcomes
    assert 0 < statuses["200"] < FILES and statuses["503"] > 0
    message = (
        f"the router is out of file descriptors (open-files limit {FILES}) and cannot serve another "
        "connection now; retry"
    )
    assert {json.loads(body)["error"] for (status, body) in outcomes if status == "503"} == {message}
    assert "WARNING modelpool.routing.httpserver: out of file descriptors" in log, log[-2000:]
    assert f"open-files limit {FILES}" in log and "--max-connections" in log
