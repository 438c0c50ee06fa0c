"""The operator's push against a real router process-in-test (admin API on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import httpx
import pytest

from modelpool.api.routingpolicy import RouterStatus
from modelpool.controllers import policy_reconciler
from modelpool.controllers.router_push import (
    PUSH_CONCURRENCY,
    choose_generation,
    live_router_pods,
    push_all,
    push_one,
)
from modelpool.kube import KubeClient, Obj
from modelpool.routing.config import RouterConfig
from modelpool.routing.server import start_router
from unit.operator import test_spec_edge_cases as edge
from unit.operator.test_spec_edge_cases import API

TOKEN = "s3cret-token"
SECRET = "p-router-token"


def _config(generation: int, small: int = 1) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "generation": generation,
            "pool": "bank",
            "mode": "weighted",
            "modelName": "bank",
            # Endpoints on loopback where nothing listens: no request is sent in this test.
            "variants": [
                {
                    "name": "small",
                    "tier": "small",
                    "tritonModel": "s",
                    "weight": small,
                    "endpoints": ["http://127.0.0.1:9"],
                },
                {
                    "name": "large",
                    "tier": "large",
                    "tritonModel": "l",
                    "weight": 1,
                    "endpoints": ["http://127.0.0.1:9"],
                },
            ],
        }
    )


def _pod(port_ip: str = "127.0.0.1", ready: bool = True) -> dict[str, Any]:
    """A router pod that mounts the token's Secret (the token is sent to no other pod)."""
    return {
        "metadata": {"name": "router-0"},
        "spec": {
            "containers": [{"name": "router"}],
            "volumes": [{"name": "token", "secret": {"secretName": SECRET}}],
        },
        "status": {
            "podIP": port_ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


async def test_push_programs_and_is_idempotent() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9), secret=SECRET)
            assert status.programmed and status.generation == 2 and status.message == "pushed"
            assert running.app.router.config.variant("small").weight == 9
            again = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9), secret=SECRET)
            assert again.programmed and again.message == "running this generation"
    finally:
        await running.close()


async def test_wrong_token_is_reported_and_old_config_stays() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, "wrong", _config(2), secret=SECRET)
            assert not status.programmed
            assert "401" in status.message
            assert running.app.router.config.generation == 1
    finally:
        await running.close()


async def test_unready_pods_are_not_contacted() -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        results = await push_all(client, [_pod(ready=False)], 9, TOKEN, _config(1), secret=SECRET)
    assert len(results) == 1 and not results[0].programmed
    assert "waiting" in results[0].message


# --- a pod that answers unlike a router, an admin token that cannot be sent ---------------------

POLICY_NS = "ns"


def _router_pod(name: str, ip: str) -> dict[str, Any]:
    pod = _pod(ip)
    pod["metadata"] = {"name": name, "labels": {"app": "router"}}
    return pod


def _pods_answering(answers: dict[str, httpx.Response]) -> tuple[httpx.AsyncClient, list[str]]:
    """A client whose requests are answered in-process (nothing is sent): a pod at an address in
    ``answers`` gives that answer to its GET; any other pod behaves as a router running generation
    0. The list records each request's ``method host``."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}")
        if request.url.host in answers and request.method == "GET":
            return answers[request.url.host]
        if request.method == "PUT":
            return httpx.Response(200, json={"generation": 1, "changed": True})
        return httpx.Response(200, json={"generation": 0})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), seen


async def test_a_pod_answering_unlike_a_router_is_reported_and_the_others_are_pushed() -> None:
    """A selected pod answering GET /admin/config with 200 and HTML made router_generation raise
    (response.json() outside any handling): the whole policy pass failed, no other router was
    pushed and no status said why."""
    pods = [
        _router_pod("a-web", "10.0.0.1"),
        _router_pod("b-list", "10.0.0.2"),
        _router_pod("c-router", "10.0.0.3"),
        _router_pod("d-latin1", "10.0.0.4"),
    ]
    client, seen = _pods_answering(
        {
            "10.0.0.1": httpx.Response(200, text="<html>ok</html>"),
            "10.0.0.2": httpx.Response(200, json=[1, 2]),
            "10.0.0.4": httpx.Response(
                200, content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
            ),
        }
    )
    async with client:
        results = await push_all(client, pods, 8080, TOKEN, _config(1), secret=SECRET)
    by_pod = {r.pod: r for r in results}
    assert by_pod["c-router"].programmed and by_pod["c-router"].message == "pushed"
    for name in ("a-web", "b-list", "d-latin1"):
        assert not by_pod[name].programmed
        assert "not a router?" in by_pod[name].message and "spec.routerSelector" in by_pod[name].message
    assert "<html>ok</html>" in by_pod["a-web"].message
    assert "PUT 10.0.0.3" in seen and not [s for s in seen if s.startswith("PUT") and s != "PUT 10.0.0.3"]


def _policy_pass(
    secret_data: dict[str, str] | None, answers: dict[str, httpx.Response]
) -> tuple[Obj, list[str]]:
    """One reconcile_policy pass with two router pods and the policy's token Secret holding
    ``secret_data`` (no Secret for None): the status written, and the requests the pods saw."""
    pool = {
        "apiVersion": API,
        "kind": "ModelPool",
        "metadata": {"name": "bank", "uid": "u1"},
        "spec": edge._pool(),
    }
    policy = {"metadata": {"name": "p", "uid": "u2", "generation": 1}, "spec": edge._policy()}
    objects = {
        policy_reconciler.policy_path(POLICY_NS, "p"): policy,
        policy_reconciler.pool_path(POLICY_NS, "bank"): pool,
    }
    if secret_data is not None:
        objects[f"/api/v1/namespaces/{POLICY_NS}/secrets/p-router-token"] = {"data": secret_data}
    pods = [_router_pod("a-web", "10.0.0.1"), _router_pod("b-router", "10.0.0.2")]

    class Kube(edge.FakeKube):
        async def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
            return pods if path.endswith("/pods") else []

    kube = Kube(objects)
    client, seen = _pods_answering(answers)

    async def run() -> None:
        async with client:
            await policy_reconciler.reconcile_policy(
                cast(KubeClient, kube), client, POLICY_NS, "p", lambda *_: None
            )

    asyncio.run(run())
    assert kube.patched, "no status written"
    return kube.patched[-1]["status"], seen


def _programmed(status: Obj) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == "Programmed")


def test_the_policy_pass_reports_a_pod_answering_unlike_a_router_and_pushes_the_others() -> None:
    token = base64.b64encode(TOKEN.encode()).decode()
    status, seen = _policy_pass({"token": token}, {"10.0.0.1": httpx.Response(200, text="<html>ok</html>")})
    routers = {r["pod"]: r for r in status["routers"]}
    assert routers["b-router"]["programmed"] is True
    assert routers["a-web"]["programmed"] is False and "not JSON" in routers["a-web"]["message"]
    programmed = _programmed(status)
    assert (programmed["status"], programmed["reason"]) == ("False", "PushFailed")
    assert "a-web" in programmed["message"]
    assert "PUT 10.0.0.2" in seen


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xff\xfe\xfd", "is not UTF-8 text"),
        ("t\u00f6ken".encode(), "holds characters an HTTP header cannot carry"),
        (b"  \n", "is empty"),
    ],
)
def test_an_admin_token_that_cannot_be_sent_is_reported_naming_the_secret_and_key(
    raw: bytes, problem: str
) -> None:
    """A token Secret whose value is not UTF-8 made _admin_token raise UnicodeDecodeError and the
    whole pass fail, with no condition saying which Secret to fix."""
    status, seen = _policy_pass({"token": base64.b64encode(raw).decode()}, {})
    programmed = _programmed(status)
    assert (programmed["status"], programmed["reason"]) == ("False", "AdminTokenInvalid")
    assert (
        "key 'token' of Secret p-router-token" in programmed["message"] and problem in programmed["message"]
    )
    assert [r["pod"] for r in status["routers"]] == ["a-web", "b-router"]
    assert all(problem in r["message"] for r in status["routers"])
    assert seen == []  # nothing sent with a token the routers cannot hold


def test_a_missing_admin_token_is_still_reported_as_missing() -> None:
    status, seen = _policy_pass(None, {})
    programmed = _programmed(status)
    assert (programmed["status"], programmed["reason"]) == ("False", "AdminTokenMissing")
    assert "Secret p-router-token" in programmed["message"] and seen == []


# --- content, not just the generation, decides whether a router is programmed ------------------


async def test_a_router_on_other_content_under_the_same_generation_is_pushed() -> None:
    """push_one compared generations only: a router running generation 5 with other weights was
    reported programmed ("running this generation") and never got the weights."""
    running = await start_router(_config(5, small=1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, TOKEN, _config(5, small=9), secret=SECRET)
        assert status.programmed and status.message == "pushed"
        assert running.app.router.config.variant("small").weight == 9
    finally:
        await running.close()


async def test_a_router_of_another_pool_is_told_how_to_fix_it() -> None:
    running = await start_router(_config(3), admin_token=TOKEN)
    try:
        other = _config(4).model_copy(update={"pool": "bank2"})
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, TOKEN, other, secret=SECRET)
        assert not status.programmed and "rejected (409)" in status.message
        assert "serves pool 'bank'" in status.message
        assert "create a new RoutingPolicy for pool 'bank2'" in status.message
        assert running.app.router.config.pool == "bank"
    finally:
        await running.close()


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
async def test_ended_pods_are_left_out(phase: str) -> None:
    ended = _pod(ready=False)
    ended["status"]["phase"] = phase
    assert live_router_pods([ended, _pod(ready=False)]) == [_pod(ready=False)]
    async with httpx.AsyncClient(timeout=1) as client:
        assert await push_all(client, [ended], 9, TOKEN, _config(1), secret=SECRET) == []


# --- routers are asked at once, a bounded number at a time --------------------------------------


async def _hanging_routers(count: int) -> tuple[list[RouterStatus], int, list[str]]:
    """push_all against ``count`` pods that never answer (each request times out after a moment):
    the results, the most requests that were in flight at once, and the methods sent."""
    in_flight = most = 0
    methods: list[str] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        methods.append(request.method)
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            in_flight -= 1
        raise httpx.ReadTimeout("no answer", request=request)

    pods = [_router_pod(f"r{i:02d}", f"10.0.0.{i + 1}") for i in reversed(range(count))]
    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        results = await push_all(client, pods, 8080, TOKEN, _config(1), secret=SECRET)
    return results, most, methods


async def test_unreachable_routers_are_asked_at_once_in_a_stable_order() -> None:
    """Pods were pushed one at a time: ten routers that never answer took 10 x (GET + PUT)
    timeouts, 100 s at the operator's 5 s, while every other router waited its turn."""
    results, most, methods = await _hanging_routers(10)
    assert most == 10
    assert [r.pod for r in results] == [f"r{i:02d}" for i in range(10)]
    assert all(not r.programmed and r.message.startswith("unreachable: ") for r in results)
    assert methods == ["GET"] * 10  # a router that did not answer the GET is not sent the PUT


async def test_no_more_routers_than_the_bound_are_asked_at_once() -> None:
    results, most, _ = await _hanging_routers(PUSH_CONCURRENCY + 4)
    assert most == PUSH_CONCURRENCY == 16
    assert len(results) == PUSH_CONCURRENCY + 4


@pytest.mark.parametrize(
    ("reports", "chosen"),
    [
        ([], 1),  # nothing published yet
        ([(0, None)], 1),
        ([(3, "mine")], 3),  # the status and the routers already stand for this content
        ([(3, "mine"), (3, None)], 3),  # a router that does not say its content: pushed, same generation
        ([(3, "theirs")], 4),  # the content changed
        ([(3, "mine"), (3, "theirs")], 4),  # a router runs other content under that generation
        ([(3, "mine"), (7, "theirs")], 8),  # a router is ahead (a recreated policy, a lost status)
        ([(5, None)], 6),
    ],
)
def test_the_generation_is_above_every_report_of_other_content(
    reports: list[tuple[int, str | None]], chosen: int
) -> None:
    assert choose_generation("mine", reports) == chosen
