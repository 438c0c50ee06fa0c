"""The operator's push against a real router process-in-test (admin API on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import httpx
import pytest

from modelpool.controllers import policy_reconciler
from modelpool.controllers.router_push import push_all, push_one
from modelpool.kube import KubeClient, Obj
from modelpool.routing.config import RouterConfig
from modelpool.routing.server import start_router
from unit.operator import test_spec_edge_cases as edge
from unit.operator.test_spec_edge_cases import API

TOKEN = "s3cret-token"


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
    return {
        "metadata": {"name": "router-0"},
        "status": {
            "podIP": port_ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


async def test_push_programs_and_is_idempotent() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9))
            assert status.programmed and status.generation == 2 and status.message == "pushed"
            assert running.app.router.config.variant("small").weight == 9
            again = await push_one(client, _pod(), running.port, TOKEN, _config(2, small=9))
            assert again.programmed and again.message == "running this generation"
    finally:
        await running.close()


async def test_wrong_token_is_reported_and_old_config_stays() -> None:
    running = await start_router(_config(1), admin_token=TOKEN)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            status = await push_one(client, _pod(), running.port, "wrong", _config(2))
            assert not status.programmed
            assert "401" in status.message
            assert running.app.router.config.generation == 1
    finally:
        await running.close()


async def test_unready_pods_are_not_contacted() -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        results = await push_all(client, [_pod(ready=False)], 9, TOKEN, _config(1))
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
        results = await push_all(client, pods, 8080, TOKEN, _config(1))
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
