"""Pushing a RouterConfig to router pods over their authenticated admin API.

A pass first asks every selected router what it runs (``GET /admin/config``: its generation and
its whole active config), so that the generation the policy publishes is above every generation a
router of it reports whenever some router runs other content (:func:`choose_generation`); then it
pushes (``PUT``) to each router that does not run exactly that config. Routers are asked and
pushed concurrently, at most :data:`PUSH_CONCURRENCY` at a time, and reported in pod name order.

What a policy's author chooses (the selector, the port, the token's Secret) decides where the
operator sends the token and whose answers it reads, so: the token goes only to pods whose spec
references its Secret (:func:`references_secret`: they hold its value already), and each exchange
is bounded in time (:data:`PUSH_TIMEOUT_SECONDS` in all) and in bytes (:data:`MAX_ANSWER_BYTES`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
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
"""The most one exchange with a router may take in all: connecting, sending and reading the whole
answer (the HTTP client's own timeouts are per read, which a pod sending a byte now and then never
trips)."""
MAX_ANSWER_BYTES = 2 << 20
"""The most of a router's answer that is read (2 MiB); a longer one is that pod's error. The
largest answer a router gives is its GET: its whole config and its live endpoints. For a pool's
most (8 variants of 1,000 replicas each, IPv6 addresses, the longest names) it is about 0.6 MB with
EndpointSlice sources, as the operator renders them, and 1.0 MB with the same endpoints listed
statically as well. At most :data:`PUSH_CONCURRENCY` answers are read at once per policy."""
MAX_GENERATION = 2**53
"""Generations at or above this that a router or the ConfigMap report are not followed: the policy
would publish one above them, past what the status (int64) or a JSON number (2^53) holds."""
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


def references_secret(pod: Obj, secret: str) -> bool:
    """Whether the pod's spec references Secret ``secret`` (in its own namespace): a secret or
    projected volume, or a container's (init containers too) env ``secretKeyRef`` or ``envFrom``
    ``secretRef``. Such a pod holds the Secret's value already, so the admin token from it may be
    sent to that pod; to any other pod it would give away a Secret its owner may not read."""
    spec = pod.get("spec") or {}
    for volume in spec.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret:
            return True
        sources = (volume.get("projected") or {}).get("sources") or []
        if any((source.get("secret") or {}).get("name") == secret for source in sources):
            return True
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret:
                return True
        if any(
            (source.get("secretRef") or {}).get("name") == secret for source in container.get("envFrom") or []
        ):
            return True
    return False


def token_not_sent(pod: Obj, secret: str) -> RouterStatus:
    return RouterStatus(
        pod=pod["metadata"]["name"],
        programmed=False,
        message=(
            f"admin token not sent: it goes only to pods that mount or reference its Secret; the "
            f"router pod must mount or reference Secret {secret} (a secret volume for "
            "--admin-token-file, or an env secretKeyRef or envFrom secretRef), or spec.routerSelector "
            "must not select this pod"
        ),
    )


def admin_url(pod: Obj, port: int) -> str:
    ip = pod["status"]["podIP"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/admin/config"


class NotARouter(ValueError):
    """A pod answered the admin API's GET with 200 but not as a router does (a JSON object with
    its ``generation``): most likely a pod ``spec.routerSelector`` selects by mistake."""


class Unanswered(Exception):
    """No whole answer within :data:`PUSH_TIMEOUT_SECONDS` and :data:`MAX_ANSWER_BYTES`, or one
    encoded for transfer (a router sends none): the message says which."""


@dataclass(frozen=True)
class Answer:
    """A router's whole answer, read within the deadline and the byte cap."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON (or not UTF-8)."""
        return json.loads(self.content)


def _too_large() -> Unanswered:
    return Unanswered(f"answer larger than {MAX_ANSWER_BYTES} bytes")


async def _body(response: httpx.Response) -> bytes:
    """The answer's body as sent, at most MAX_ANSWER_BYTES of it (a compressed body would be
    inflated past any cap, so none is read)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Unanswered(
            f"answered with Content-Encoding {encoding!r}, which is not read (a router sends none)"
        )
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in response.aiter_bytes():  # as sent: the encoding is identity
        if len(body) + len(chunk) > MAX_ANSWER_BYTES:
            raise _too_large()
        body += chunk
    return bytes(body)


async def _exchange(
    client: httpx.AsyncClient, method: str, url: str, token: str, content: str | None = None
) -> Answer:
    """One request with the admin token, its answer read whole within the bounds; Unanswered or
    httpx.HTTPError otherwise."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    if content is not None:
        headers["Content-Type"] = "application/json"
    deadline = PUSH_TIMEOUT_SECONDS
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(method, url, headers=headers, content=content) as response:
                return Answer(response.status_code, await _body(response))
    except TimeoutError as err:
        raise Unanswered(f"no complete answer within {deadline:g} s") from err


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
    policy: str | None = None
    """The RoutingPolicy that programs it, as its config names it: read from the raw config even
    when this operator cannot read that config (another version's), else None."""
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
    if generation is not None and generation >= MAX_GENERATION:
        message = (
            f"reports generation {generation}, not below {MAX_GENERATION}: ignored when choosing the "
            "generation, and not pushed (it would refuse any lower one as older); restart the router "
            "pod so that it starts from the policy's ConfigMap"
        )
        name = pod["metadata"]["name"]
        return RouterView(pod, outcome=RouterStatus(pod=name, programmed=False, message=message))
    config = None
    raw_config = body.get("config")
    if isinstance(raw_config, dict):
        try:
            config = RouterConfig.model_validate(raw_config)
        except ValidationError:  # another version's config: its generation, pool and policy are known
            config = None
    else:
        raw_config = {}
    pool = config.pool if config is not None else raw_config.get("pool")
    pool = pool if isinstance(pool, str) else body.get("pool")
    policy = config.policy if config is not None else raw_config.get("policy")
    return RouterView(
        pod,
        generation,
        config,
        pool if isinstance(pool, str) else None,
        policy if isinstance(policy, str) else None,
    )


async def read_router(
    client: httpx.AsyncClient, pod: Obj, port: int, token: str, *, secret: str
) -> RouterView:
    """Ask one pod what it runs; whatever goes wrong is said in the view's ``outcome``. ``secret``:
    the Secret the token comes from; a pod that does not reference it is not asked."""
    name = pod["metadata"]["name"]
    if not references_secret(pod, secret):
        return RouterView(pod, outcome=token_not_sent(pod, secret))
    if not pod_is_ready(pod):
        return RouterView(pod, outcome=RouterStatus(pod=name, programmed=False, message=WAITING))
    url = admin_url(pod, port)
    try:
        response = await _exchange(client, "GET", url, token)
    except httpx.HTTPError as err:
        return RouterView(pod, outcome=RouterStatus(pod=name, message=f"unreachable: {err!r}"))
    except Unanswered as err:
        return RouterView(pod, outcome=RouterStatus(pod=name, message=f"GET {url}: {err}"))
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


POLICY_REFUSAL = "policy: this router is programmed by RoutingPolicy"
"""How a router's 409 for a push of another RoutingPolicy (or of none) begins its reason."""


def refused_for_policy(router: RouterStatus) -> bool:
    """Whether ``router`` (a status this operator wrote) says its router refused the push because
    another RoutingPolicy programs it (its 409), which a router whose GET names no policy (an older
    router, or a config this operator cannot read) shows only when pushed."""
    return router.message.startswith("rejected (409): ") and POLICY_REFUSAL in router.message


def _other_policy(view: RouterView, config: RouterConfig) -> bool:
    return view.policy is not None and config.policy is not None and view.policy != config.policy


def router_reports(
    views: Iterable[RouterView], config: RouterConfig, refused: Collection[str] = ()
) -> list[tuple[int, str | None]]:
    """(generation, content digest or None) of each router that runs ``config``'s pool and policy
    (or no policy): routers of another pool or policy refuse the push whatever its generation, so
    their generations are not this policy's to rise above (two policies whose selectors overlap
    would otherwise publish one above the other's on every pass). ``refused``: pods that refused
    the last push as another policy's router (see :func:`refused_for_policy`), left out too."""
    reports: list[tuple[int, str | None]] = []
    for view in views:
        if view.generation is None or (view.pool is not None and view.pool != config.pool):
            continue
        if _other_policy(view, config) or view.name in refused:
            continue
        reports.append((view.generation, config_digest(view.config) if view.config is not None else None))
    return reports


def choose_generation(digest: str, reports: Iterable[tuple[int, str | None]]) -> int:
    """The generation to publish the content with ``digest`` under, from the (generation, digest)
    pairs the stored status, the ConfigMap and the routers report (digest None: unknown).

    The highest generation reported is kept while it already stands for this content (some report
    at it has this digest and none another); otherwise the content gets one above it. So a router
    never runs other content under the generation the status holds, and never refuses a push as
    older than what it runs (a recreated policy, a lost status write). Generations at or above
    :data:`MAX_GENERATION` are ignored: the result is at most MAX_GENERATION."""
    known = [(g, d) for g, d in reports if g < MAX_GENERATION]
    top = max((g for g, _ in known), default=0)
    at_top = {d for g, d in known if g == top and d is not None}
    return top if top > 0 and at_top == {digest} else top + 1


def _refusal_hint(view: RouterView, config: RouterConfig, status: int) -> str:
    """The fix for a router bound to another pool (the router's own message names the fix for a
    router of another policy)."""
    if status != 409 or _other_policy(view, config) or view.pool is None or view.pool == config.pool:
        return ""
    return (
        f"; a router serves one pool for its whole life: to route pool {config.pool!r}, create a "
        f"new RoutingPolicy for pool {config.pool!r} and point its spec.routerSelector at router "
        "pods of that pool, or restart these pods so they start from this policy's ConfigMap"
    )


def _detail(response: Answer) -> str:
    """What a refused PUT says: the router's ``error``, else the body as it came."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", response.text)) if isinstance(body, dict) else response.text


@dataclass(frozen=True)
class Published:
    """What the policy published before this pass, for routers whose config cannot be read."""

    reports: Collection[tuple[int, str | None]] = ()
    """(generation, content digest) the stored status and the ConfigMap report."""
    refused: Collection[str] = ()
    """Pods that refused the last push as another policy's router (see :func:`refused_for_policy`)."""


def runs(view: RouterView, config: RouterConfig, published: Published | None = None) -> bool:
    """Whether the router runs exactly ``config``: its generation and its content. A router whose
    config cannot be read (an older router's GET carries none, a newer one's has fields this
    operator does not know) runs it when it reports ``config``'s generation, names no other pool or
    policy, did not refuse the last push as another policy's, and the policy published this content
    under that generation before (``published``: the stored status or the ConfigMap say so)."""
    if view.generation != config.generation:
        return False
    if view.config is not None:
        return config_digest(view.config) == config_digest(config)
    return (
        published is not None
        and (config.generation, config_digest(config)) in published.reports
        and view.name not in published.refused
        and (view.pool is None or view.pool == config.pool)
        and not _other_policy(view, config)
    )


async def program(
    client: httpx.AsyncClient,
    view: RouterView,
    port: int,
    token: str,
    config: RouterConfig,
    *,
    secret: str,
    published: Published | None = None,
) -> RouterStatus:
    """Make one router run ``config``; skip the PUT when it already does (same generation and
    content, see :func:`runs` for ``published``). Whatever goes wrong with this pod is said in its
    RouterStatus. ``secret``: the Secret the token comes from; a pod that does not reference it is
    not pushed."""
    name = view.name
    if view.outcome is not None:
        return view.outcome
    if not references_secret(view.pod, secret):
        return token_not_sent(view.pod, secret)
    current = view.generation or 0
    if runs(view, config, published):
        return RouterStatus(pod=name, generation=current, programmed=True, message="running this generation")
    body = json.dumps(config.model_dump(mode="json", by_alias=True, exclude_none=True))
    url = admin_url(view.pod, port)
    try:
        response = await _exchange(client, "PUT", url, token, body)
    except httpx.HTTPError as err:
        return RouterStatus(pod=name, generation=current, programmed=False, message=f"unreachable: {err!r}")
    except Unanswered as err:
        return RouterStatus(pod=name, generation=current, programmed=False, message=f"PUT {url}: {err}")
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
    client: httpx.AsyncClient, pod: Obj, port: int, token: str, config: RouterConfig, *, secret: str
) -> RouterStatus:
    """Ask one router what it runs and make it run ``config`` (``secret``: the token's Secret)."""
    view = await read_router(client, pod, port, token, secret=secret)
    return await program(client, view, port, token, config, secret=secret)


async def _each(items: Sequence[T], act: Callable[[T], Awaitable[R]]) -> list[R]:
    """``act`` on every item, at most PUSH_CONCURRENCY at once; the results in the items' order."""
    gate = asyncio.Semaphore(PUSH_CONCURRENCY)

    async def one(item: T) -> R:
        async with gate:
            return await act(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def read_routers(
    client: httpx.AsyncClient, pods: Sequence[Obj], port: int, token: str, *, secret: str
) -> list[RouterView]:
    """What each live pod runs, in pod name order (ended pods are left out); ``secret``: the
    Secret the token comes from (see :func:`read_router`)."""

    async def read(pod: Obj) -> RouterView:
        try:
            return await read_router(client, pod, port, token, secret=secret)
        except ValueError as err:  # one pod's answer or address the client cannot handle: that pod only
            failed = RouterStatus(
                pod=pod["metadata"]["name"], programmed=False, message=f"push failed: {err!r}"
            )
            return RouterView(pod, outcome=failed)

    ordered = sorted(live_router_pods(pods), key=lambda p: str(p["metadata"]["name"]))
    return await _each(ordered, read)


async def program_routers(
    client: httpx.AsyncClient,
    views: Sequence[RouterView],
    port: int,
    token: str,
    config: RouterConfig,
    *,
    secret: str,
    published: Published | None = None,
) -> list[RouterStatus]:
    """Push ``config`` to every router that does not run it yet; one status per view, same order
    (``secret``: the token's Secret, ``published``: what the policy published before, see
    :func:`program`)."""

    async def push(view: RouterView) -> RouterStatus:
        try:
            return await program(client, view, port, token, config, secret=secret, published=published)
        except ValueError as err:  # one pod's address the client cannot handle: that pod only
            return RouterStatus(pod=view.name, programmed=False, message=f"push failed: {err!r}")

    return await _each(views, push)


async def push_all(
    client: httpx.AsyncClient,
    pods: Sequence[Obj],
    port: int,
    token: str,
    config: RouterConfig,
    *,
    secret: str,
) -> list[RouterStatus]:
    """Push to every ready router pod that references ``secret`` (the token's Secret); pods not
    ready yet are listed as waiting, ended ones not."""
    views = await read_routers(client, pods, port, token, secret=secret)
    return await program_routers(client, views, port, token, config, secret=secret)


def listed_routers(routers: Sequence[RouterStatus]) -> list[RouterStatus]:
    """What ``status.routers`` lists: the routers not programmed first, then by pod name, at most
    MAX_LISTED_ROUTERS."""
    return sorted(routers, key=lambda r: (r.programmed, r.pod))[:MAX_LISTED_ROUTERS]
