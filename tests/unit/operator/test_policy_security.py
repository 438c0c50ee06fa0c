"""What a RoutingPolicy's author can make the operator do with its pass: send the admin token only
to pods that can read its Secret anyway, read bounded answers within a deadline, write only its own
ConfigMap, and publish only generations the API server can store. Routers are servers on 127.0.0.1
or answered in-process; the API server is a dict (test_policy_push_convergence's)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from modelpool.controllers import router_push
from modelpool.controllers.router_push import MAX_ANSWER_BYTES, MAX_GENERATION, choose_generation
from modelpool.kube import Obj
from unit.operator import test_policy_push_convergence as conv

NS = conv.NS
TOKEN_SECRET = "p-router-token"
CONFIG_MAP = f"/api/v1/namespaces/{NS}/configmaps/p-router-config"
DB_PASSWORD = "hunter2-production-db-password"


def _pod(name: str, ip: str, spec: Obj | None) -> Obj:
    pod = conv._pod(name, ip=ip)
    if spec is not None:
        pod["spec"] = spec
    return pod


def _token_volume(secret: str) -> Obj:
    """How docs/router.md mounts the token: a secret volume read by --admin-token-file."""
    return {
        "containers": [{"name": "router", "volumeMounts": [{"name": "token", "mountPath": "/t"}]}],
        "volumes": [{"name": "token", "secret": {"secretName": secret}}],
    }


def _recording(
    get: Callable[[httpx.Request], httpx.Response] | None = None,
) -> tuple[httpx.AsyncClient, list[tuple[str, str, str]]]:
    """A client answered in-process as a router at generation 0 would answer (or ``get`` for the
    GET); it records each request's (method, host, Authorization)."""
    seen: list[tuple[str, str, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.host, request.headers.get("authorization", "")))
        if request.method == "PUT":
            return httpx.Response(200, json={"generation": 1, "changed": True})
        return (
            get(request) if get is not None else httpx.Response(200, json={"generation": 0, "pool": "bank"})
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), seen


# --- the admin token goes only to pods that reference its Secret ---------------------------------

REFERENCES: dict[str, Obj] = {
    "secret volume": _token_volume("db-credentials"),
    "projected volume": {
        "containers": [{"name": "router"}],
        "volumes": [
            {
                "name": "all",
                "projected": {
                    "sources": [{"configMap": {"name": "x"}}, {"secret": {"name": "db-credentials"}}]
                },
            }
        ],
    },
    "env secretKeyRef": {
        "containers": [
            {
                "name": "router",
                "env": [
                    {"name": "A", "value": "b"},
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "k"}}},
                ],
            }
        ]
    },
    "envFrom secretRef": {
        "containers": [
            {
                "name": "router",
                "envFrom": [{"configMapRef": {"name": "x"}}, {"secretRef": {"name": "db-credentials"}}],
            }
        ]
    },
    "init container": {
        "initContainers": [
            {
                "name": "init",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db-credentials"}}}],
            }
        ],
        "containers": [{"name": "router"}],
    },
}


@pytest.mark.parametrize("form", sorted(REFERENCES))
async def test_the_admin_token_is_sent_only_to_pods_that_reference_its_secret(form: str) -> None:
    """spec.adminTokenSecretRef may name any Secret of the namespace and spec.routerSelector any
    pod: the operator, which may read every Secret, sent the value of db-credentials as a bearer
    token to a pod of the policy author's that never had it."""
    spec = conv._policy_spec(31337)
    spec["adminTokenSecretRef"] = {"name": "db-credentials", "key": "password"}
    pods = [
        _pod("evil-bare", "10.6.6.1", None),
        _pod("evil-other", "10.6.6.2", _token_volume(TOKEN_SECRET)),
        _pod(
            "evil-lookalike",
            "10.6.6.3",
            {
                "containers": [{"name": "c", "env": [{"name": "db-credentials", "value": "db-credentials"}]}],
                "volumes": [{"name": "db-credentials", "configMap": {"name": "db-credentials"}}],
            },
        ),
        _pod("router", "10.0.0.9", REFERENCES[form]),
    ]
    kube = conv._world(spec, pods)
    password = base64.b64encode(DB_PASSWORD.encode()).decode()
    kube.objects[f"/api/v1/namespaces/{NS}/secrets/db-credentials"] = {"data": {"password": password}}
    client, seen = _recording()
    async with client:
        status = await conv._pass(kube, client)
    assert {host for _, host, _ in seen} == {"10.0.0.9"}, seen
    assert all(auth == f"Bearer {DB_PASSWORD}" for _, _, auth in seen)
    routers = {r["pod"]: r for r in status["routers"]}
    assert routers["router"]["programmed"] is True
    for name in ("evil-bare", "evil-other", "evil-lookalike"):
        assert routers[name]["programmed"] is False
        message = routers[name]["message"]
        assert "the router pod must mount or reference Secret db-credentials" in message, message
    programmed = conv._cond(status, "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "PushFailed")
    assert "Secret db-credentials" in programmed["message"]


async def test_the_default_token_secret_mounted_as_the_docs_show_is_programmed() -> None:
    kube = conv._world(conv._policy_spec(8080), [_pod("router-0", "10.0.0.1", _token_volume(TOKEN_SECRET))])
    client, seen = _recording()
    async with client:
        status = await conv._pass(kube, client)
    assert conv._cond(status, "Programmed")["status"] == "True"
    assert [m for m, _, _ in seen] == ["GET", "PUT"]


# --- answers are read with a byte cap and a deadline ---------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _server(handle: Handler) -> AsyncIterator[int]:
    """An HTTP server of its own on 127.0.0.1 (``handle`` gets each connection): its port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _head(reader: asyncio.StreamReader) -> str:
    """The request's method (its body, if any, is read too)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next(
        (
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        ),
        0,
    )
    if length:
        await reader.readexactly(length)
    return head.split(" ", 1)[0]


async def _endless(writer: asyncio.StreamWriter, chunk: bytes, pause: float) -> None:
    """A 200 whose chunked body never ends: ``chunk`` every ``pause`` seconds."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    try:
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            await asyncio.sleep(pause)
    except (ConnectionError, RuntimeError):  # the operator hung up
        pass


def _json_answer(writer: asyncio.StreamWriter, body: Obj) -> None:
    data = json.dumps(body).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(data), data)
    )


async def _pass_against(port: int) -> Obj:
    """One policy pass with one router pod (mounting the token) whose admin API is ``port`` on
    127.0.0.1; a pass that has not ended after 10 s fails the test."""
    kube = conv._world(conv._policy_spec(port), [_pod("router-0", "127.0.0.1", _token_volume(TOKEN_SECRET))])
    async with httpx.AsyncClient(timeout=5) as client:
        return await asyncio.wait_for(conv._pass(kube, client), 10)


async def test_an_endless_get_answer_is_cut_at_the_cap() -> None:
    """httpx read a whole answer with no byte cap (its timeout is per read): a selected pod that
    streams forever grew the operator's memory by ~900 MB in 4 s (chart limit 512Mi)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await _endless(writer, b"x" * 65536, 0.01)

    async with _server(handle) as port:
        status = await _pass_against(port)
    (router,) = status["routers"]
    assert router["programmed"] is False
    assert f"answer larger than {MAX_ANSWER_BYTES} bytes" in router["message"], router


async def test_an_endless_put_answer_is_cut_at_the_cap() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            method = await _head(reader)
            if method == "PUT":
                await _endless(writer, b"x" * 65536, 0.01)
                return
            _json_answer(writer, {"generation": 0, "pool": "bank"})
            await writer.drain()

    async with _server(handle) as port:
        status = await _pass_against(port)
    (router,) = status["routers"]
    assert router["programmed"] is False
    assert f"answer larger than {MAX_ANSWER_BYTES} bytes" in router["message"], router


async def test_a_declared_length_above_the_cap_is_refused_unread() -> None:
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1))
        writer.write(b"{" * 1000)
        await writer.drain()
        seen.append(1)
        await asyncio.sleep(30)

    async with _server(handle) as port:
        status = await asyncio.wait_for(_pass_against(port), 3)
    assert f"answer larger than {MAX_ANSWER_BYTES} bytes" in status["routers"][0]["message"]


async def test_an_answer_that_drips_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.1 s never trips a per-read timeout: the pass waited as long as the pod
    wished. The deadline is for the whole exchange."""
    monkeypatch.setattr(router_push, "PUSH_TIMEOUT_SECONDS", 0.5)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await _endless(writer, b" ", 0.1)

    async with _server(handle) as port:
        started = asyncio.get_running_loop().time()
        status = await _pass_against(port)
        took = asyncio.get_running_loop().time() - started
    (router,) = status["routers"]
    assert "no complete answer within 0.5 s" in router["message"], router
    assert took < 3


async def test_a_compressed_answer_is_not_inflated() -> None:
    """A gzip answer of 64 MiB of zeros is 64 KiB on the wire: inflating it is the same attack."""
    bomb = gzip.compress(b"0" * (64 << 20), compresslevel=9)

    class Sent(httpx.AsyncByteStream):  # the body as it comes off the wire (a mock would inflate it)
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield bomb

    def get(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Sent(), headers={"content-encoding": "gzip"})

    kube = conv._world(conv._policy_spec(8080), [_pod("router-0", "10.0.0.1", _token_volume(TOKEN_SECRET))])
    client, seen = _recording(get)
    async with client:
        status = await conv._pass(kube, client)
    message = status["routers"][0]["message"]
    assert "Content-Encoding 'gzip'" in message, message
    assert [m for m, _, _ in seen] == ["GET"]
    assert seen and all(auth == f"Bearer {conv.TOKEN}" for _, _, auth in seen)


# --- the router ConfigMap is this policy's only --------------------------------------------------


@pytest.mark.parametrize(
    "owners",
    [
        [],
        [{"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "someone-else", "controller": True}],
        [{"apiVersion": "modelpool.dev/v1alpha1", "kind": "RoutingPolicy", "name": "p", "uid": "u2"}],
    ],
    ids=["no owner", "another controller", "owner but not controller"],
)
async def test_a_config_map_of_someone_else_is_neither_overwritten_nor_adopted(owners: list[Obj]) -> None:
    """<policy>-router-config was force-applied whoever held it: a policy could overwrite an
    unrelated ConfigMap of that name, and its owner reference then had it garbage-collected with
    the policy."""
    kube = conv._world(conv._policy_spec(8080), [_pod("router-0", "10.0.0.1", _token_volume(TOKEN_SECRET))])
    theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "p-router-config", "namespace": NS, "ownerReferences": owners},
        "data": {"app.properties": "keep me"},
    }
    kube.objects[CONFIG_MAP] = json.loads(json.dumps(theirs))
    client, seen = _recording()
    async with client:
        status = await conv._pass(kube, client)
    assert kube.objects[CONFIG_MAP] == theirs
    programmed = conv._cond(status, "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "ConfigMapConflict")
    assert "ConfigMap p-router-config" in programmed["message"]
    assert "delete or rename it" in programmed["message"]
    assert seen == [], "no router is asked or pushed while the policy has no ConfigMap of its own"


async def test_the_policys_own_config_map_is_updated() -> None:
    kube = conv._world(conv._policy_spec(8080), [])
    await conv._pass(kube)
    kube.objects[conv.POLICY]["spec"]["weights"][0]["weight"] = 9
    status = await conv._pass(kube)
    assert conv._config_map_generation(kube) == 2 == status["weightsGeneration"]


# --- a generation the API server cannot store is not followed ------------------------------------


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return []


async def test_a_router_reporting_a_huge_generation_is_ignored_and_said_so() -> None:
    """A router answering generation 10**30 made the policy publish 10**30 + 1: above int64, the
    status write failed on every pass for ever."""
    huge = 10**30

    def get(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"generation": huge, "pool": "bank"})

    kube = conv._world(
        conv._policy_spec(8080),
        [
            _pod("router-0", "10.0.0.1", _token_volume(TOKEN_SECRET)),
            _pod("router-1", "10.0.0.2", _token_volume(TOKEN_SECRET)),
        ],
    )
    client, seen = _recording(
        lambda r: get(r) if r.url.host == "10.0.0.1" else httpx.Response(200, json={"generation": 4})
    )
    async with client:
        status = await conv._pass(kube, client)
    assert status["weightsGeneration"] == 5 == conv._config_map_generation(kube)
    assert max(_ints(status)) < 2**63
    routers = {r["pod"]: r for r in status["routers"]}
    assert routers["router-0"]["programmed"] is False and routers["router-0"]["generation"] == 0
    assert str(huge) in routers["router-0"]["message"] and "ignored" in routers["router-0"]["message"]
    assert routers["router-1"]["programmed"] is True
    assert ("PUT", "10.0.0.1") not in {(m, h) for m, h, _ in seen}


def test_choose_generation_ignores_generations_above_the_bound() -> None:
    assert MAX_GENERATION == 2**53
    assert choose_generation("d", [(10**30, None), (3, "d")]) == 3
    assert choose_generation("d", [(MAX_GENERATION, "e")]) == 1
    assert choose_generation("d", [(MAX_GENERATION - 1, "e")]) == MAX_GENERATION
