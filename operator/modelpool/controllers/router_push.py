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


async def router_generation(client: httpx.AsyncClient, url: str, token: str) -> int | None:
    """The generation a router runs now, or None when it cannot be asked."""
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    generation = response.json().get("generation")
    return int(generation) if isinstance(generation, int) else None


async def push_one(
    client: httpx.AsyncClient, pod: Obj, port: int, token: str, config: RouterConfig
) -> RouterStatus:
    """Make one router run ``config``; skip the PUT when it already does."""
    name = pod["metadata"]["name"]
    url = admin_url(pod, port)
    current = await router_generation(client, url, token)
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
    try:
        detail = str(response.json().get("error", response.text))
    except ValueError:
        detail = response.text
    return RouterStatus(
        pod=name,
        generation=current or 0,
        programmed=False,
        message=f"rejected ({response.status_code}): {detail[:400]}",
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
        results.append(await push_one(client, pod, port, token, config))
    return results
