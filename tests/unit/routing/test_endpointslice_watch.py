"""The router's EndpointSlice watch against a scripted API server: list, watch from the list's
version, bookmarks, a watch the server ends, a broken connection, a 410 Gone."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from modelpool.kube import KubeClient, KubeError
from modelpool.kubelogin import Credentials
from modelpool.routing import endpoints
from modelpool.routing.config import EndpointSliceSource as SliceConfig
from modelpool.routing.endpoints import EndpointSliceSource

PATH = "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"


def _slice(name: str, version: str, *addresses: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version},
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def _lines(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(json.dumps({"type": t, "object": o}).encode() + b"\n" for t, o in events)


class Server:
    """Answers each request with the next scripted answer; records what was asked."""

    def __init__(self, answers: list[Callable[[httpx.Request], httpx.Response]]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []
        self.done = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) >= len(self.answers):
            self.done.set()
        if len(self.requests) > len(self.answers):
            # Nothing more to say: the watch stays open until the test stops the source.
            return httpx.Response(200, stream=_Forever())
        return self.answers[len(self.requests) - 1](request)


class _Forever(httpx.AsyncByteStream):
    async def __aiter__(self):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()
        yield b""


def _listed(version: str, *items: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(
        200, json={"metadata": {"resourceVersion": version}, "items": list(items)}
    )


def _watched(*events: tuple[str, dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, content=_lines(*events))


def _broken(_: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def _client(server: Server) -> Callable[[], Awaitable[KubeClient]]:
    async def make() -> KubeClient:
        credentials = Credentials(server="http://127.0.0.1:9", verify=False)
        return KubeClient(credentials, transport=httpx.MockTransport(server))

    return make


async def _run(server: Server, monkeypatch: pytest.MonkeyPatch) -> EndpointSliceSource:
    monkeypatch.setattr(endpoints, "RETRY_MIN_S", 0.01)
    source = EndpointSliceSource(
        SliceConfig(service="small", namespace="ns", port="http"), client=_client(server)
    )
    source._retry = 0.01
    await source.start()
    await asyncio.wait_for(server.done.wait(), 5)
    await asyncio.sleep(0.05)
    await source.stop()
    return source


def _params(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


async def test_it_watches_from_the_last_version_seen_and_lists_only_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(
        [
            _listed("10", _slice("a", "9", "10.0.0.1")),
            _watched(
                ("ADDED", _slice("b", "11", "10.0.0.2")),
                ("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
            ),
            _broken,  # the API server restarts
            _watched(("DELETED", _slice("a", "16"))),
        ]
    )
    with caplog.at_level(logging.INFO, logger="modelpool.routing.endpoints"):
        source = await _run(server, monkeypatch)
    assert source.lists == 1
    assert [r.url.path for r in server.requests] == [PATH] * 5
    list_params, *watches = [_params(r) for r in server.requests]
    assert list_params == {"labelSelector": "kubernetes.io/service-name=small"}
    assert [w["resourceVersion"] for w in watches] == ["10", "15", "15", "16"]
    assert all(w["watch"] == "true" and w["allowWatchBookmarks"] == "true" for w in watches)
    assert source.urls() == ["http://10.0.0.2:8000"]
    # The first broken connection of a streak is said at INFO: an API server restarting.
    broken = [r for r in caplog.records if "ConnectError" in r.getMessage()]
    assert [r.levelno for r in broken] == [logging.INFO]


async def test_a_410_gone_lists_again_and_goes_on_from_the_new_list(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = {
        "kind": "Status",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version: 10 (40)",
    }
    server = Server(
        [
            _listed("10", _slice("a", "9", "10.0.0.1")),
            _watched(("ERROR", gone)),
            _listed("41", _slice("a", "35", "10.0.0.3")),
        ]
    )
    source = await _run(server, monkeypatch)
    assert source.lists == 2
    assert _params(server.requests[3])["resourceVersion"] == "41"
    assert source.urls() == ["http://10.0.0.3:8000"]


async def test_a_refusal_is_a_warning_and_is_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    forbidden = {
        "kind": "Status",
        "code": 403,
        "reason": "Forbidden",
        "message": "cannot watch endpointslices",
    }
    server = Server(
        [
            _listed("10"),
            lambda _: httpx.Response(403, json=forbidden),
            _watched(("ADDED", _slice("a", "12", "10.0.0.1"))),
        ]
    )
    with caplog.at_level(logging.INFO, logger="modelpool.routing.endpoints"):
        source = await _run(server, monkeypatch)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "403 Forbidden: cannot watch endpointslices" in warnings[0]
    assert source.lists == 1 and source.urls() == ["http://10.0.0.1:8000"]


async def test_the_client_raises_an_error_event_as_a_kube_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert _params(request)["timeoutSeconds"] == "7"
        return httpx.Response(
            200, content=_lines(("ERROR", {"code": 410, "reason": "Expired", "message": "old"}))
        )

    kube = KubeClient(
        Credentials(server="http://127.0.0.1:9", verify=False), transport=httpx.MockTransport(answer)
    )
    with pytest.raises(KubeError) as raised:
        async for _ in kube.watch(PATH, "5", timeout_s=7):
            pass
    assert (raised.value.status, raised.value.reason) == (410, "Expired")
    await kube.close()


async def test_watches_that_end_at_once_empty_are_paused_between_not_a_tight_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy (or an API server shutting down) that answers every watch with an empty 200, and a
    410 right after each list: each is asked again only after the growing pause (before: 2,000
    watches in 0.5 s, the event loop starved)."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(endpoints.asyncio, "sleep", sleep)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    server = Server(
        [
            _listed("10"),
            _watched(),
            _watched(),
            _watched(("ERROR", gone)),
            _listed("20"),
            _watched(("ERROR", gone)),
            _listed("30"),
        ]
    )
    source = EndpointSliceSource(
        SliceConfig(service="small", namespace="ns", port="http"), client=_client(server)
    )
    await source.start()
    await asyncio.wait_for(server.done.wait(), 5)
    await source.stop()
    # Two empty watches: 1 s, 2 s. The 410 of a resumed watch relists at once (the API server is
    # there); the 410 right after that list: 4 s.
    assert sleeps == [1.0, 2.0, 4.0]
    assert source.lists == 3


async def test_sources_that_start_together_share_one_read_of_the_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []

    def load() -> Credentials:
        reads.append(1)
        return Credentials(server="http://127.0.0.1:9", verify=False)

    monkeypatch.setattr(endpoints, "load_credentials", load)
    monkeypatch.setattr(endpoints, "_credentials", {})
    clients = await asyncio.gather(*(endpoints._client() for _ in range(5)))
    assert len(reads) == 1
    for client in clients:
        await client.close()

    def broken() -> Credentials:
        raise OSError("no kubeconfig")

    monkeypatch.setattr(endpoints, "_credentials", {})
    monkeypatch.setattr(endpoints, "load_credentials", broken)
    with pytest.raises(OSError):
        await endpoints._client()
    monkeypatch.setattr(endpoints, "load_credentials", load)
    await (await endpoints._client()).close()  # a failed read is read again
    assert len(reads) == 2
