"""Where a variant's requests go: endpoint sources and per-endpoint state.

* :class:`StaticSource`: the URLs in the config (pod URLs, or one Service URL).
* :class:`EndpointSliceSource`: watches ``discovery.k8s.io/v1`` EndpointSlices labelled
  ``kubernetes.io/service-name=<service>`` with kr8s and keeps the *ready* endpoints, as the
  Gateway API Inference Extension's endpoint picker does, so the router balances per
  replica and a replica that stops being ready leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from modelpool.routing.breaker import CircuitBreaker
from modelpool.routing.config import BreakerConfig
from modelpool.routing.config import EndpointSliceSource as SliceConfig
from modelpool.routing.upstream import EndpointClient

logger = logging.getLogger(__name__)


class Endpoint:
    """One replica's base URL with its connections, breaker and in-flight count."""

    __slots__ = ("breaker", "client", "outstanding", "url")

    def __init__(self, url: str, breaker: BreakerConfig) -> None:
        self.url = url.rstrip("/")
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


class EndpointSliceSource:
    """Ready endpoints of a Service, kept current by a kr8s watch (re-listed after errors)."""

    def __init__(self, config: SliceConfig, on_change: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self._on_change = on_change
        self._slices: dict[str, dict[str, Any]] = {}
        self._urls: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

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
        import kr8s.asyncio  # lazy: only in-cluster routers need it

        selector = {"kubernetes.io/service-name": self.config.service}
        while True:
            try:
                api = await kr8s.asyncio.api()
                listed: dict[str, dict[str, Any]] = {}
                async for obj in api.get(
                    "endpointslices.discovery.k8s.io",
                    namespace=self.config.namespace,
                    label_selector=selector,
                ):
                    if not isinstance(obj, dict):
                        listed[obj.name] = obj.raw
                self._slices = listed
                self._update()
                self.synced.set()
                async for event, obj in api.watch(
                    "endpointslices.discovery.k8s.io",
                    namespace=self.config.namespace,
                    label_selector=selector,
                ):
                    if event == "DELETED":
                        self._slices.pop(obj.name, None)
                    else:
                        self._slices[obj.name] = obj.raw
                    self._update()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.warning(
                    "EndpointSlice watch for %s failed (%s); retrying in 1 s", self.config.service, err
                )
                await asyncio.sleep(1.0)


def make_source(variant_endpoints: list[str], slice_config: SliceConfig | None) -> EndpointSource:
    """The source a variant's config asks for (an EndpointSlice watch wins over static URLs)."""
    if slice_config is not None:
        return EndpointSliceSource(slice_config)
    return StaticSource(variant_endpoints)
