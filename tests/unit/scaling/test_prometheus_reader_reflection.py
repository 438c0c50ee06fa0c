"""What of a remote answer reaches a pool's status (a tenant reads it): a Prometheus-shaped error
text, truncated; of anything else only the HTTP status; never another series' labels, nor the
transport's repr (addresses, errno texts: a port-scan oracle). HTTP faked with httpx.MockTransport,
the unreachable ports are on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from modelpool.scaling.prometheus_reader import (
    PrometheusError,
    PrometheusReader,
    QueryTemplates,
    VariantTarget,
)

Handle = Callable[[httpx.Request], httpx.Response]
SECRET = "internal-only data: SECRET42"


async def _error(handle: Handle, url: str = "http://prometheus.monitoring:9090", promql: str = "up") -> str:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        reader = PrometheusReader(url, client=client)
        with pytest.raises(PrometheusError) as err:
            await reader.scalar(promql)
    return str(err.value)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(403, json={"status": "error", "error": SECRET}),  # the review's proof: no errorType
        httpx.Response(403, json={"error": SECRET}),
        httpx.Response(500, json={"status": "error", "errorType": SECRET, "error": SECRET}),
        httpx.Response(401, json={"status": "error", "errorType": "bad_data", "error": ["x", SECRET]}),
        httpx.Response(200, json={"status": SECRET}),
    ],
)
async def test_an_error_not_shaped_as_prometheus_ones_gives_only_the_status_code(
    answer: httpx.Response,
) -> None:
    message = await _error(lambda _r: answer)
    assert "SECRET42" not in message, message
    assert f"HTTP {answer.status_code}" in message


async def test_a_prometheus_error_is_named_truncated() -> None:
    long = "parse error at char 5: " + "x" * 5000
    message = await _error(
        lambda _r: httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": long})
    )
    assert "HTTP 400 bad_data parse error at char 5: xxx" in message
    assert len(message) < 400, len(message)


async def test_several_series_are_counted_without_their_labels() -> None:
    """The review's proof: custom PromQL of another namespace's series; the second one's labels
    (and the first one's) reached the pool's conditions."""

    def handle(_r: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"namespace": "team-b", "secret": "stripe-live-key"}, "value": [1, "1"]},
                        {"metric": {"namespace": "team-b", "secret": "db-root"}, "value": [1, "1"]},
                        {"metric": {"namespace": "team-b", "secret": "third"}, "value": [1, "1"]},
                    ],
                },
            },
        )

    message = await _error(handle, promql="kube_secret_info")
    assert "stripe-live-key" not in message and "db-root" not in message and "team-b" not in message
    assert "returned 3 series, expected one" in message, message


async def test_several_series_name_the_field_that_overrides_the_query() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if re.search(r"\[\d+ms:\d+ms\]$", request.url.params["query"]):  # a rate series
            data = {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}]}
        else:
            result = [{"metric": {"secret": f"s{i}"}, "value": [1, "1"]} for i in range(2)]
            data = {"resultType": "vector", "result": result}
        return httpx.Response(200, json={"status": "success", "data": data})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        reader = PrometheusReader(
            "http://prometheus.monitoring:9090",
            client=client,
            templates=QueryTemplates(pending="kube_secret_info"),
        )
        metrics = await reader.read_variant(VariantTarget(model="m", variant="v"))
    assert metrics.problem is not None
    assert "s0" not in metrics.problem and "s1" not in metrics.problem
    assert "returned 2 series, expected one" in metrics.problem


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_says_so_without_the_transport_repr() -> None:
    """It said ``unreachable: ConnectError('All connection attempts failed')`` (errno texts with
    addresses for other failures): now the exception class and a short reason."""
    reader = PrometheusReader(f"http://127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(PrometheusError) as err:
            await reader.query("up")
    finally:
        await reader.aclose()
    message = str(err.value)
    assert "unreachable: ConnectError (connection refused)" in message, message
    assert "Errno" not in message and "attempts" not in message and "('" not in message


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server on 127.0.0.1 that accepts and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_server_times_out(silent_url: str) -> None:
    reader = PrometheusReader(silent_url, timeout_s=0.5)
    try:
        with pytest.raises(PrometheusError) as err:
            await asyncio.wait_for(reader.query("up"), 5)
    finally:
        await reader.aclose()
    assert "timed out" in str(err.value), err.value


@pytest.mark.parametrize(
    "url",
    ["http://vault.internal:8200/v1/sys/raw/anything?x=", "http://prometheus.monitoring:9090/#x"],
)
async def test_a_base_url_with_a_query_or_fragment_is_refused_unasked(url: str) -> None:
    """The review's proof: ``?x=`` made ``/api/v1/query`` part of the query string, so the operator
    asked the path the URL named (any path of any host)."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        reader = PrometheusReader(url, client=client)
        with pytest.raises(PrometheusError, match=r"is invalid: .*query \(\?\) or fragment"):
            await reader.query("up")
    assert seen == []


async def test_the_reader_asks_for_an_uncompressed_answer() -> None:
    headers: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        assert await PrometheusReader("http://prometheus.monitoring:9090", client=client).query("up") == []
    assert headers == ["identity"]
