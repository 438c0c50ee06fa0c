"""Where a variant's requests go: endpoint sources and per-endpoint state.

* :class:`StaticSource`: the URLs in the config (pod URLs, or one Service URL).
* :class:`EndpointSliceSource`: watches ``discovery.k8s.io/v1`` EndpointSlices labelled
  ``kubernetes.io/service-name=<service>`` and keeps the *ready* endpoints, as the
  Gateway API Inference Extension's endpoint picker does, so the router balances per
  replica and a replica that stops being ready leaves at once. It logs in as the operator does
  (:mod:`modelpool.kubelogin`: the pod's service account, its token read again as the kubelet
  rotates it, or a kubeconfig) and watches with the operator's client (:mod:`modelpool.kube`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import httpx

from modelpool.kube import KubeClient, KubeError, resource_path
from modelpool.kubelogin import Credentials, load_credentials
from modelpool.routing.balancing import stable_hash
from modelpool.routing.breaker import CircuitBreaker
from modelpool.routing.config import BreakerConfig
from modelpool.routing.config import EndpointSliceSource as SliceConfig
from modelpool.routing.upstream import EndpointClient

logger = logging.getLogger(__name__)


class Endpoint:
    """One replica's base URL with its connections, breaker, in-flight count and the hash that
    places sequences on it (rendezvous hashing of the URL)."""

    __slots__ = ("breaker", "client", "hrw", "outstanding", "url")

    def __init__(self, url: str, breaker: BreakerConfig) -> None:
        self.url = url.rstrip("/")
        self.hrw = stable_hash(self.url.encode())
        self.client = EndpointClient(self.url)
        self.breaker = CircuitBreaker(
            breaker.failure_threshold, breaker.open_seconds, breaker.max_open_seconds
        )
        self.outstanding = 0


class EndpointSource(Protocol):
    """Gives the current URLs of one variant's ready replicas."""

    def urls(self) -> list[str]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class StaticSource:
    """Fixed URLs from the config."""

    def __init__(self, urls: Iterable[str]) -> None:
        self._urls = [u.rstrip("/") for u in urls]

    def urls(self) -> list[str]:
        """The same list object every time (callers compare by identity)."""
        return self._urls

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def ready_urls_from_slices(slices: Iterable[dict[str, Any]], port: int | str) -> list[str]:
    """Base URLs of the ready endpoints in EndpointSlice objects (pure; ``port`` by number or name)."""
    urls: set[str] = set()
    for obj in slices:
        if obj.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        number: int | None = None  # the port must be one the slice lists
        for p in obj.get("ports") or []:
            if isinstance(port, str) and p.get("name") == port:
                number = p.get("port")
            elif isinstance(port, int) and p.get("port") == port:
                number = port
        if number is None:
            continue
        for ep in obj.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            for address in ep.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                urls.add(f"http://{host}:{number}")
    return sorted(urls)


RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
"""A failed list or watch is tried again after 1 s, doubling while it keeps failing."""


QUICK_END_S = 1.0
"""A watch that ends this soon without a single event is paused after like a failure (a proxy or
an API server that closes watches at once would otherwise be asked again in a tight loop)."""

_credentials: dict[str | None, asyncio.Future[Credentials]] = {}
"""The router's login, read once (off the event loop) and shared by every source: one signer, so
one token file read or plugin run serves them all. Sources that start together await the same
read; a read that fails is dropped, to be tried again. Keyed by ``$KUBECONFIG``, the one input
that picks another login in a process (tests set it per test)."""


async def _client() -> KubeClient:
    key = os.environ.get("KUBECONFIG")
    loading = _credentials.get(key)
    if loading is None:
        loading = _credentials[key] = asyncio.ensure_future(asyncio.to_thread(load_credentials))
    try:
        credentials = await asyncio.shield(loading)
    except Exception:
        if _credentials.get(key) is loading:
            del _credentials[key]
        raise
    return KubeClient(credentials)


class EndpointSliceSource:
    """Ready endpoints of a Service, kept current by a watch (listed again after a 410 Gone)."""

    def __init__(
        self,
        config: SliceConfig,
        on_change: Callable[[], None] = lambda: None,
        client: Callable[[], Awaitable[KubeClient]] = _client,
        watch_timeout_s: int = 300,
    ) -> None:
        self.config = config
        self._watch_timeout_s = watch_timeout_s
        self._on_change = on_change
        self._make_client = client
        self._slices: dict[str, dict[str, Any]] = {}
        self._urls: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self._retry = RETRY_MIN_S
        self._version: str | None = None
        """The resourceVersion the next watch goes on from; None: list first."""
        self.lists = 0
        """How many times the slices were listed: once, and once more per 410 Gone."""

    def urls(self) -> list[str]:
        """Replaced, never mutated, when the endpoints change (callers compare by identity)."""
        return self._urls

    def _update(self) -> None:
        urls = ready_urls_from_slices(self._slices.values(), self.config.port)
        if urls != self._urls:
            logger.info("service %s/%s endpoints: %s", self.config.namespace, self.config.service, urls)
            self._urls = urls
            self._on_change()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        kube: KubeClient | None = None
        try:
            while True:
                try:
                    kube = kube or await self._make_client()
                    await self._follow(kube)
                except Exception as err:
                    await self._failed(err)
        finally:
            if kube is not None:
                await kube.close()

    async def _failed(self, err: Exception) -> None:
        """Said, then tried again (from the last version seen) after a pause that doubles while the
        failures go on. A broken connection (an API server restarting) is said at INFO the first
        time; a refusal (401, 403) and a failure that lasts are WARNINGs."""
        lost = isinstance(err, httpx.TransportError) and self._retry == RETRY_MIN_S
        logger.log(
            logging.INFO if lost else logging.WARNING,
            "EndpointSlice watch for service %s/%s failed (%s: %s); trying again in %g s",
            self.config.namespace,
            self.config.service,
            type(err).__name__,
            err,
            self._retry,
        )
        await self._pause()

    async def _pause(self) -> None:
        """Wait the current retry delay, and double it for the next time (up to RETRY_MAX_S); an
        event from the API server sets it back to RETRY_MIN_S."""
        await asyncio.sleep(self._retry)
        self._retry = min(self._retry * 2, RETRY_MAX_S)

    async def _follow(self, kube: KubeClient) -> None:
        """List (first, and after a 410 Gone), then watch from the last version seen, again each
        time the API server ends the watch."""
        path = resource_path("discovery.k8s.io/v1", "endpointslices", self.config.namespace)
        selector = f"kubernetes.io/service-name={self.config.service}"
        while True:
            listed = self._version is None
            if self._version is None:
                items, self._version = await kube.list_at(path, selector)
                self.lists += 1
                self._slices = {str(obj["metadata"]["name"]): obj for obj in items}
                self._update()
                self.synced.set()
            began, events = time.monotonic(), 0
            try:
                async for kind, obj in kube.watch(path, self._version, selector, self._watch_timeout_s):
                    events += 1
                    self._version = str(obj.get("metadata", {}).get("resourceVersion") or self._version)
                    self._retry = RETRY_MIN_S
                    if kind == "BOOKMARK":
                        continue
                    name = str(obj["metadata"]["name"])
                    if kind == "DELETED":
                        self._slices.pop(name, None)
                    else:
                        self._slices[name] = obj
                    self._update()
            except KubeError as err:
                if err.status != 410:
                    raise
                logger.info(
                    "EndpointSlice watch for service %s/%s: %s; listing again",
                    self.config.namespace,
                    self.config.service,
                    err.message,
                )
                self._version = None
                if listed:
                    await self._pause()  # 410 right after a list: not in a tight loop
                continue
            if events == 0 and time.monotonic() - began < QUICK_END_S:
                await self._pause()


def make_source(variant_endpoints: list[str], slice_config: SliceConfig | None) -> EndpointSource:
    """The source a variant's config asks for (an EndpointSlice watch wins over static URLs)."""
    if slice_config is not None:
        return EndpointSliceSource(slice_config)
    return StaticSource(variant_endpoints)
