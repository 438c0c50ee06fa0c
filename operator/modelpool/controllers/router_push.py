"""Pushing a RouterConfig to router pods over their authenticated admin API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from modelpool.api.routingpolicy import RouterStatus
from modelpool.routing.config import RouterConfig

Obj = dict[str, Any]
PUSH_TIMEOUT_SECONDS = 5.0


def pod_is_ready(pod: Obj) -> bool:
    status = pod.get("status", {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []) or []
    )
    return bool(status.get("podIP")) and ready and not pod["metadata"].get("deletionTimestamp")


def admin_url(pod: Obj, port: int) -> str:
    ip = pod["status"]["podIP"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/admin/config"


class NotARouter(ValueError):
    """A pod answered the admin API's GET with 200 but not as a router does (a JSON object with
    its ``generation``): most likely a pod ``spec.routerSelector`` selects by mistake."""


def _excerpt(text: str, most: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[:most] + "\u2026"


async def router_generation(client: httpx.AsyncClient, url: str, token: str) -> int | None:
    """The generation a router runs now, or None when it cannot be asked; :class:`NotARouter` when
    the pod answers 200 with something no router answers."""
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError as err:  # not JSON, or not UTF-8
        raise NotARouter(f"answered GET {url} with 200 but not JSON: {_excerpt(response.text)!r}") from err
    if not isinstance(body, dict):
        raise NotARouter(f"answered GET {url} with 200 but no JSON object: {_excerpt(response.text)!r}")
    generation = body.get("generation")
    return int(generation) if isinstance(generation, int) and not isinstance(generation, bool) else None


def _detail(response: httpx.Response) -> str:
    """What a refused PUT says: the router's ``error``, else the body as it came."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", response.text)) if isinstance(body, dict) else response.text


async def push_one(
    client: httpx.AsyncClient, pod: Obj, port: int, token: str, config: RouterConfig
) -> RouterStatus:
    """Make one router run ``config``; skip the PUT when it already does. Whatever goes wrong with
    this pod is said in its RouterStatus (the other routers are pushed all the same)."""
    name = pod["metadata"]["name"]
    url = admin_url(pod, port)
    try:
        current = await router_generation(client, url, token)
    except NotARouter as err:
        return RouterStatus(
            pod=name,
            programmed=False,
            message=f"not a router? {err}; check that spec.routerSelector selects only router pods "
            "and spec.routerPort is their admin port",
        )
    if current == config.generation:
        return RouterStatus(pod=name, generation=current, programmed=True, message="running this generation")
    body = json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True))
    try:
        response = await client.put(
            url,
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    except httpx.HTTPError as err:
        return RouterStatus(
            pod=name, generation=current or 0, programmed=False, message=f"unreachable: {err!r}"
        )
    if response.status_code == 200:
        return RouterStatus(pod=name, generation=config.generation, programmed=True, message="pushed")
    return RouterStatus(
        pod=name,
        generation=current or 0,
        programmed=False,
        message=f"rejected ({response.status_code}): {_detail(response)[:400]}",
    )


async def push_all(
    client: httpx.AsyncClient, pods: Sequence[Obj], port: int, token: str, config: RouterConfig
) -> list[RouterStatus]:
    """Push to every ready router pod; pods not ready yet are listed as waiting."""
    results = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        if not pod_is_ready(pod):
            results.append(
                RouterStatus(
                    pod=pod["metadata"]["name"], programmed=False, message="waiting for the pod to be Ready"
                )
            )
            continue
        try:
            results.append(await push_one(client, pod, port, token, config))
        except ValueError as err:  # one pod's answer or address the client cannot handle: that pod only
            results.append(
                RouterStatus(pod=pod["metadata"]["name"], programmed=False, message=f"push failed: {err!r}")
            )
    return results
