"""Pushing a RouterConfig to router pods over their authenticated admin API.

A pass first asks every selected router what it runs (``GET /admin/config``: its generation and
its whole active config), so that the generation the policy publishes is above every generation a
router of it reports whenever some router runs other content (:func:`choose_generation`); then it
pushes (``PUT``) to each router that does not run exactly that config. Routers are asked and
pushed concurrently, at most :data:`PUSH_CONCURRENCY` at a time, and reported in pod name order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from modelpool.api.routingpolicy import MAX_LISTED_ROUTERS, RouterStatus
from modelpool.controllers.routing_config import config_digest
from modelpool.routing.config import RouterConfig

Obj = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")

PUSH_TIMEOUT_SECONDS = 5.0
PUSH_CONCURRENCY = 16
"""Routers asked or pushed at once: a pass with unreachable routers takes about
``ceil(n / PUSH_CONCURRENCY)`` timeouts, not ``n``."""
ENDED_PHASES = frozenset({"Succeeded", "Failed"})
WAITING = "waiting for the pod to be Ready"


def live_router_pods(pods: Iterable[Obj]) -> list[Obj]:
    """The pods that may still run a router: not in phase Succeeded or Failed. An evicted or
    completed pod keeps matching the selector until it is deleted, and never runs again."""
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ENDED_PHASES]


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


@dataclass(frozen=True)
class RouterView:
    """What one selected pod runs, as the GET of its admin API says."""

    pod: Obj
    generation: int | None = None
    """None: the answer said nothing readable (a 401, say); the PUT then tells why."""
    config: RouterConfig | None = None
    """Its active config, when the answer carries one this operator can read."""
    pool: str | None = None
    outcome: RouterStatus | None = None
    """Set when the pod is not to be pushed: not Ready, unreachable, not a router."""

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])


def _router_view(pod: Obj, body: Any, url: str, text: str) -> RouterView:
    if not isinstance(body, dict):
        raise NotARouter(f"answered GET {url} with 200 but no JSON object: {_excerpt(text)!r}")
    raw = body.get("generation")
    generation = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    config = None
    if isinstance(body.get("config"), dict):
        try:
            config = RouterConfig.model_validate(body["config"])
        except ValidationError:  # another version's config: the generation is still known
            config = None
    pool = config.pool if config is not None else body.get("pool")
    return RouterView(pod, generation, config, pool if isinstance(pool, str) else None)


async def read_router(client: httpx.AsyncClient, pod: Obj, port: int, token: str) -> RouterView:
    """Ask one pod what it runs; whatever goes wrong is said in the view's ``outcome``."""
    name = pod["metadata"]["name"]
    if not pod_is_ready(pod):
        return RouterView(pod, outcome=RouterStatus(pod=name, programmed=False, message=WAITING))
    url = admin_url(pod, port)
    try:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as err:
        return RouterView(pod, outcome=RouterStatus(pod=name, message=f"unreachable: {err!r}"))
    if response.status_code != 200:
        return RouterView(pod)
    try:
        try:
            body = response.json()
        except ValueError as err:  # not JSON, or not UTF-8
            raise NotARouter(
                f"answered GET {url} with 200 but not JSON: {_excerpt(response.text)!r}"
            ) from err
        return _router_view(pod, body, url, response.text)
    except NotARouter as err:
        message = (
            f"not a router? {err}; check that spec.routerSelector selects only router pods "
            "and spec.routerPort is their admin port"
        )
        return RouterView(pod, outcome=RouterStatus(pod=name, programmed=False, message=message))


def router_reports(views: Iterable[RouterView], config: RouterConfig) -> list[tuple[int, str | None]]:
    """(generation, content digest or None) of each router that runs ``config``'s pool and policy
    (or no policy): routers of another pool or policy refuse the push whatever its generation."""
    reports: list[tuple[int, str | None]] = []
    for view in views:
        if view.generation is None or (view.pool is not None and view.pool != config.pool):
            continue
        theirs = view.config.policy if view.config is not None else None
        if theirs is not None and config.policy is not None and theirs != config.policy:
            continue
        reports.append((view.generation, config_digest(view.config) if view.config is not None else None))
    return reports


def choose_generation(digest: str, reports: Iterable[tuple[int, str | None]]) -> int:
    """The generation to publish the content with ``digest`` under, from the (generation, digest)
    pairs the stored status, the ConfigMap and the routers report (digest None: unknown).

    The highest generation reported is kept while it already stands for this content (some report
    at it has this digest and none another); otherwise the content gets one above it. So a router
    never runs other content under the generation the status holds, and never refuses a push as
    older than what it runs (a recreated policy, a lost status write)."""
    known = list(reports)
    top = max((g for g, _ in known), default=0)
    at_top = {d for g, d in known if g == top and d is not None}
    return top if top > 0 and at_top == {digest} else top + 1


def _refusal_hint(view: RouterView, config: RouterConfig, status: int) -> str:
    """The fix for a router bound to another pool (the router's own message names the fix for a
    router of another policy)."""
    theirs = view.config.policy if view.config is not None else None
    other_policy = theirs is not None and config.policy is not None and theirs != config.policy
    if status != 409 or other_policy or view.pool is None or view.pool == config.pool:
        return ""
    return (
        f"; a router serves one pool for its whole life: to route pool {config.pool!r}, create a "
        f"new RoutingPolicy for pool {config.pool!r} and point its spec.routerSelector at router "
        "pods of that pool, or restart these pods so they start from this policy's ConfigMap"
    )


def _detail(response: httpx.Response) -> str:
    """What a refused PUT says: the router's ``error``, else the body as it came."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", response.text)) if isinstance(body, dict) else response.text


def runs(view: RouterView, config: RouterConfig) -> bool:
    """Whether the router runs exactly ``config``: its generation and its content."""
    return (
        view.generation == config.generation
        and view.config is not None
        and config_digest(view.config) == config_digest(config)
    )


async def program(
    client: httpx.AsyncClient, view: RouterView, port: int, token: str, config: RouterConfig
) -> RouterStatus:
    """Make one router run ``config``; skip the PUT when it already does (same generation and
    content). Whatever goes wrong with this pod is said in its RouterStatus."""
    name = view.name
    if view.outcome is not None:
        return view.outcome
    current = view.generation or 0
    if runs(view, config):
        return RouterStatus(pod=name, generation=current, programmed=True, message="running this generation")
    body = json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True))
    try:
        response = await client.put(
            admin_url(view.pod, port),
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    except httpx.HTTPError as err:
        return RouterStatus(pod=name, generation=current, programmed=False, message=f"unreachable: {err!r}")
    if response.status_code == 200:
        return RouterStatus(pod=name, generation=config.generation, programmed=True, message="pushed")
    hint = _refusal_hint(view, config, response.status_code)
    return RouterStatus(
        pod=name,
        generation=current,
        programmed=False,
        message=f"rejected ({response.status_code}): {_detail(response)[:600]}{hint}",
    )


async def push_one(
    client: httpx.AsyncClient, pod: Obj, port: int, token: str, config: RouterConfig
) -> RouterStatus:
    """Ask one router what it runs and make it run ``config``."""
    return await program(client, await read_router(client, pod, port, token), port, token, config)


async def _each(items: Sequence[T], act: Callable[[T], Awaitable[R]]) -> list[R]:
    """``act`` on every item, at most PUSH_CONCURRENCY at once; the results in the items' order."""
    gate = asyncio.Semaphore(PUSH_CONCURRENCY)

    async def one(item: T) -> R:
        async with gate:
            return await act(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def read_routers(
    client: httpx.AsyncClient, pods: Sequence[Obj], port: int, token: str
) -> list[RouterView]:
    """What each live pod runs, in pod name order (ended pods are left out)."""

    async def read(pod: Obj) -> RouterView:
        try:
            return await read_router(client, pod, port, token)
        except ValueError as err:  # one pod's answer or address the client cannot handle: that pod only
            failed = RouterStatus(
                pod=pod["metadata"]["name"], programmed=False, message=f"push failed: {err!r}"
            )
            return RouterView(pod, outcome=failed)

    ordered = sorted(live_router_pods(pods), key=lambda p: str(p["metadata"]["name"]))
    return await _each(ordered, read)


async def program_routers(
    client: httpx.AsyncClient, views: Sequence[RouterView], port: int, token: str, config: RouterConfig
) -> list[RouterStatus]:
    """Push ``config`` to every router that does not run it yet; one status per view, same order."""

    async def push(view: RouterView) -> RouterStatus:
        try:
            return await program(client, view, port, token, config)
        except ValueError as err:  # one pod's address the client cannot handle: that pod only
            return RouterStatus(pod=view.name, programmed=False, message=f"push failed: {err!r}")

    return await _each(views, push)


async def push_all(
    client: httpx.AsyncClient, pods: Sequence[Obj], port: int, token: str, config: RouterConfig
) -> list[RouterStatus]:
    """Push to every ready router pod; pods not ready yet are listed as waiting, ended ones not."""
    return await program_routers(client, await read_routers(client, pods, port, token), port, token, config)


def listed_routers(routers: Sequence[RouterStatus]) -> list[RouterStatus]:
    """What ``status.routers`` lists: the routers not programmed first, then by pod name, at most
    MAX_LISTED_ROUTERS."""
    return sorted(routers, key=lambda r: (r.programmed, r.pod))[:MAX_LISTED_ROUTERS]
