"""The operator counts its own requests to the API server by verb and resource."""

from __future__ import annotations

import json

import httpx
import pytest

from modelpool.kube import KubeClient, request_kind, resource_path
from modelpool.kubelogin import Credentials
from modelpool.scaling.metrics import REGISTRY

POOLS = ("modelpool.dev/v1alpha1", "modelpools")


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", resource_path("apps/v1", "deployments", "ns"), ("list", "deployments")),
        ("GET", resource_path("apps/v1", "deployments", "ns", "bank-small"), ("get", "deployments")),
        ("GET", resource_path("v1", "pods", "ns") + "?labelSelector=a%3Db", ("list", "pods")),
        ("PATCH", resource_path(*POOLS, "ns", "bank") + "/status", ("patch", "modelpools/status")),
        ("PATCH", resource_path(*POOLS, "ns", "bank"), ("patch", "modelpools")),
        ("POST", resource_path("v1", "events", "ns"), ("create", "events")),
        ("DELETE", resource_path("v1", "services", "ns", "bank-small"), ("delete", "services")),
        ("PUT", resource_path("v1", "configmaps", "ns", "cm"), ("update", "configmaps")),
        ("GET", resource_path("v1", "namespaces", None, "ns"), ("get", "namespaces")),
        ("GET", resource_path("v1", "namespaces"), ("list", "namespaces")),
        ("GET", resource_path(*POOLS), ("list", "modelpools")),
    ],
)
def test_request_kind(method: str, path: str, expected: tuple[str, str]) -> None:
    assert request_kind(method, path) == expected


def _count(verb: str, resource: str) -> float:
    value = REGISTRY.get_sample_value("modelpool_kube_requests_total", {"verb": verb, "resource": resource})
    return value or 0.0


async def test_the_client_counts_each_request_it_sends() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": []} if request.url.path.endswith("pods") else {})

    kube = KubeClient(Credentials(server="http://127.0.0.1:9", verify=False))
    await kube._http.aclose()
    kube._http = httpx.AsyncClient(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(answer))
    lists, gets = _count("list", "pods"), _count("get", "pods")
    await kube.list(resource_path("v1", "pods", "ns"), "a=b")
    await kube.list(resource_path("v1", "pods", "ns"))
    await kube.get(resource_path("v1", "pods", "ns", "p"))
    await kube._http.aclose()
    assert _count("list", "pods") == lists + 2
    assert _count("get", "pods") == gets + 1


async def test_request_bodies_escape_what_yaml_refuses() -> None:
    """The API server reads a server-side apply body as YAML, which refuses DEL and C1 control
    characters raw and folds NEL, U+2028 and U+2029 as line breaks: httpx wrote them raw (a spec's
    argument "a\\x9db" failed every pass), so the client escapes them. Not with ``ensure_ascii``:
    YAML refuses the surrogate pairs it writes for characters beyond U+FFFF, so those go as UTF-8."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    kube = KubeClient(Credentials(server="http://127.0.0.1:9", verify=False))
    await kube._http.aclose()
    kube._http = httpx.AsyncClient(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(answer))
    text = "a\x9db \x7f \x85 \u2028 \ufffe 日本 \U00074d80 \x01"
    await kube.apply(resource_path("v1", "configmaps", "ns", "cm"), {"data": {"k": text}})
    await kube.merge_patch(resource_path("v1", "configmaps", "ns", "cm"), {"data": {"k": text}})
    await kube._http.aclose()
    for request in sent:
        body = request.content
        for escaped in (b"\\u009d", b"\\u007f", b"\\u0085", b"\\u2028", b"\\ufffe"):
            assert escaped in body, body
        assert "\U00074d80".encode() in body and b"\\ud" not in body, body
        assert json.loads(body) == {"data": {"k": text}}
    assert sent[0].headers["content-type"] == "application/apply-patch+yaml"
    assert sent[1].headers["content-type"] == "application/merge-patch+json"
