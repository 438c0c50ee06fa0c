"""The routing core: picks variants, forwards, retries, runs the cascade, keeps the config.

Failure rule (docs/router.md, "Failure semantics"): inference on these models is idempotent,
so a request may be resent when an attempt *failed* - connect error, reset, timeout, HTTP
502/503/504, or Triton saying the model is not loaded/ready there.  It is resent to another
endpoint of the same variant first, then (``retry.crossVariant``) to other variants: higher
tiers first (never worse quality), then lower ones; at most ``retry.maxAttempts`` attempts.
An answer, including a 4xx or a model's own 500, is never resent.  When nothing can answer
the client gets 503 (nothing reachable) or 504 (last attempts timed out) with a JSON error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from modelpool.api.modelpool import TIER_ORDER
from modelpool.api.routingpolicy import CASCADE_TARGET
from modelpool.routing.balancing import (
    SmoothWeightedRoundRobin,
    pick_least_outstanding,
    rendezvous_order,
    stable_hash,
    weighted_rendezvous_order,
)
from modelpool.routing.breaker import BreakerState
from modelpool.routing.cache import TTLCache
from modelpool.routing.config import ConfigError, RouterConfig, VariantConfig
from modelpool.routing.decisions import keeps_draft, tier_target
from modelpool.routing.endpoints import Endpoint, EndpointSliceSource, EndpointSource, StaticSource
from modelpool.routing.httpserver import Cancellable, Response, error_response
from modelpool.routing.metrics import RouterMetrics
from modelpool.routing.scoring import ComplexityScorer, ScorerFactory, is_blocking, load_scorer
from modelpool.routing.upstream import UpstreamCall, UpstreamError, UpstreamResponse, UpstreamTimeout
from modelpool.routing.v2 import (
    PROBABILITIES_OUTPUT,
    BadRequest,
    InferBody,
    annotate,
    confidence,
    drop_output,
    ensure_output,
    find_sequence,
    parse_header_length,
    parse_request,
    parse_response,
    request_texts,
    sequence_key,
)

logger = logging.getLogger(__name__)

VARIANT_HEADER = b"x-modelpool-variant"
_HL = b"inference-header-content-length"
_RETRYABLE_STATUS = frozenset({502, 503, 504})
_NOT_SERVED_MARKERS = (b"unknown model", b"is not ready", b"no available versions", b"is not found")


class ConfigRejected(Exception):
    """A push that is valid on its own but cannot replace the active config (HTTP 409)."""


@dataclass(slots=True)
class Answer:
    """An upstream answer and who gave it."""

    variant: VariantRuntime
    response: UpstreamResponse


@dataclass(slots=True)
class NoAnswer(Exception):
    """Nothing could answer: 503, or 504 when the last attempts timed out."""

    status: int
    reasons: list[str] = field(default_factory=list)


class VariantRuntime:
    """A variant of the active config with its endpoint source."""

    def __init__(
        self, config: VariantConfig, source: EndpointSource, router: Router, router_balancing: str
    ) -> None:
        self.config = config
        self.name = config.name
        self.tier = config.tier
        self.cost = config.cost
        self.timeout = config.timeout_ms / 1000.0
        self.path = f"/v2/models/{config.triton_model}/infer".encode()
        self.name_bytes = config.name.encode()
        self.hrw = stable_hash(self.name_bytes)  # where sequences go (rendezvous hashing)
        self.source = source
        self._router = router
        self._urls: list[str] = []
        self._endpoints: list[Endpoint] = []
        self._rr = 0
        self._round_robin = router_balancing == "round_robin"

    def endpoints(self) -> list[Endpoint]:
        """Current endpoints (re-resolved when the source's URLs change)."""
        urls = self.source.urls()
        if urls is not self._urls:
            # built first: a URL the client refuses raises here again on the next call, instead of
            # leaving the variant without endpoints for good
            self._endpoints = [self._router.endpoint(self.config.triton_model, u) for u in urls]
            self._urls = urls
        return self._endpoints

    def available(self) -> list[Endpoint]:
        return [e for e in self.endpoints() if e.breaker.allows()]

    def can_take(self) -> bool:
        """Has some endpoint whose breaker lets a request through."""
        return any(e.breaker.allows() for e in self.endpoints())

    def attempt_order(self) -> list[Endpoint]:
        """Available endpoints in the order to try: the least busy first (round robin among equals),
        or plain round robin when the config says ``balancing: round_robin``.  Callers must not
        change the list."""
        endpoints = self.endpoints()
        if len(endpoints) == 1:  # the common case: one endpoint (a replica or a Service URL)
            return endpoints if endpoints[0].breaker.allows() else []
        candidates = [e for e in endpoints if e.breaker.allows()]
        if len(candidates) <= 1:
            return candidates
        self._rr += 1
        if self._round_robin:
            start = self._rr % len(candidates)
            return candidates[start:] + candidates[:start]
        first = pick_least_outstanding(candidates, self._rr)
        return [first, *(c for c in candidates if c is not first)]

    def sequence_order(self, sequence: int) -> list[Endpoint]:
        """Available endpoints in the order a sequence (its id's :func:`stable_hash`) tries them:
        by rendezvous hashing over all the variant's endpoints, so each request of the sequence goes
        to the same one, the next ones only when it is down.  Callers must not change the list."""
        endpoints = self.endpoints()
        if len(endpoints) == 1:
            return endpoints if endpoints[0].breaker.allows() else []
        return [e for e in rendezvous_order(sequence, endpoints) if e.breaker.allows()]

    def order_for(self, sequence: int | None) -> list[Endpoint]:
        """:meth:`sequence_order` for a sequence, else :meth:`attempt_order`."""
        return self.attempt_order() if sequence is None else self.sequence_order(sequence)


class RoutingTable:
    """Everything derived from one config generation."""

    def __init__(
        self,
        config: RouterConfig,
        router: Router,
        sources: dict[str, EndpointSource],
        scorer: ComplexityScorer | None,
        cache: TTLCache[Response] | None,
    ) -> None:
        """``scorer``: the loaded scorer of a tiered config (None in other modes); ``cache``: the
        response cache (None when the config disables it), see :func:`_new_cache`."""
        self.config = config
        self.variants = {
            v.name: VariantRuntime(v, sources[v.name], router, config.balancing) for v in config.variants
        }
        self.baseline_cost = config.baseline_variant().cost
        self.swrr = (
            SmoothWeightedRoundRobin([(v.name, v.weight) for v in config.variants])
            if config.mode == "weighted"
            else None
        )
        self.weighted = [v for v in self.variants.values() if v.config.weight > 0]  # the SWRR's items
        # weighted mode, while some variant cannot take requests: the round over every weighted
        # variant that says which one each request was meant for (its own state, so the round
        # among the available ones, ``swrr``, keeps its sequence); see Router._pick_weighted
        self.meant = (
            SmoothWeightedRoundRobin([(v.name, v.weight) for v in config.variants])
            if config.mode == "weighted"
            else None
        )
        # where sequences go, by weighted rendezvous hashing: the variants with a weight, in any
        # mode; with none (tiered and cascade modes need none), the baseline (large) variant
        self.sequence_variants: list[tuple[VariantRuntime, float]] = [
            (v, float(v.config.weight)) for v in self.weighted
        ] or [(self.variants[config.baseline_variant().name], 1.0)]
        self.scorer = scorer
        self.scorer_blocking = scorer is not None and is_blocking(scorer)
        self.cache = cache
        self.fallbacks = {name: self._fallback_order(v) for name, v in self.variants.items()}
        self.parse_requests = config.mode != "weighted" or bool(config.validate_requests)

    def _fallback_order(self, first: VariantRuntime) -> list[VariantRuntime]:
        if not self.config.retry.cross_variant:
            return [first]
        mine = TIER_ORDER[first.tier]
        others = [v for v in self.variants.values() if v is not first]
        upward = sorted((v for v in others if TIER_ORDER[v.tier] >= mine), key=lambda v: (v.cost, v.name))
        downward = sorted(
            (v for v in others if TIER_ORDER[v.tier] < mine), key=lambda v: (-TIER_ORDER[v.tier], v.name)
        )
        return [first, *upward, *downward]


def _uses_scorer(config: RouterConfig) -> bool:
    return config.mode == "tiered"


def _new_cache(config: RouterConfig) -> TTLCache[Response] | None:
    """An empty response cache as ``config`` asks for (None: disabled)."""
    c = config.cache
    return TTLCache(c.max_entries, c.ttl_seconds, max_bytes=c.max_bytes) if c.enabled else None


_NO_EFFECT_ON_ANSWERS = ("generation", "policy", "balancing", "max_body_bytes", "breaker")
"""The config fields a cached answer cannot depend on (with ``retry.max_attempts`` and the
variants' ``timeout_ms`` and ``weight``): which config it was, which endpoint of a variant answers,
when to give up.  Whatever is not listed (a field added later too) clears the cache when it changes."""


def _answer_key(config: RouterConfig) -> dict[str, Any]:
    """What the answers a response cache holds depend on: the config less
    :data:`_NO_EFFECT_ON_ANSWERS`, and of the weights only which variants have one (not how much:
    a cached answer of a variant is as good whatever share of the traffic the variant gets)."""
    key = config.model_dump()
    for name in _NO_EFFECT_ON_ANSWERS:
        del key[name]
    del key["retry"]["max_attempts"]
    for variant in key["variants"]:
        del variant["timeout_ms"]
        variant["weight"] = variant["weight"] > 0
    return key


def _load_scorer(config: RouterConfig, factory: ScorerFactory | None) -> ComplexityScorer:
    """The config's scorer, a torch one loaded by ``factory`` (None: the built-in one);
    :class:`ConfigError` (field ``scorer``) when it cannot be loaded, whatever the factory raised (a
    scorer file of ``{}`` gives a KeyError), so a push gets 422 and the file watch goes on."""
    try:
        return load_scorer(config.scorer, factory)
    except Exception as err:
        logger.warning("config generation %d: cannot load the scorer", config.generation, exc_info=True)
        raise ConfigError([{"field": "scorer", "message": f"{type(err).__name__}: {err}"}]) from None


def _policy_conflict(active: str, pushed: str | None) -> str:
    """Why a config of RoutingPolicy ``pushed`` (None: of no policy) cannot replace ``active``'s."""
    if pushed is None:
        return (
            f"policy: this router is programmed by RoutingPolicy {active!r} and this config names no "
            f"policy; give it policy {active!r}, or restart the router from a config of its own"
        )
    return (
        f"policy: this router is programmed by RoutingPolicy {active!r}, this config comes from "
        f"RoutingPolicy {pushed!r}: the routerSelectors of both select this router; make the "
        "routerSelectors of the two policies disjoint (a router keeps the first policy that "
        "programs it until it restarts)"
    )


def _upstream_headers(
    request_headers: dict[bytes, bytes], header_length: int | None
) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", request_headers.get(b"content-type", b"application/json"))]
    if header_length is not None:
        headers.append((_HL, str(header_length).encode()))
    return headers


def _client_response(answer: Answer, body: bytes | None = None, header_length: int | None = None) -> Response:
    """The response the client gets (upstream's, or a re-encoded body)."""
    up = answer.response
    headers = [(VARIANT_HEADER, answer.variant.name_bytes)]
    if body is None:
        body = up.body
        hl = up.headers.get(_HL)
        if hl is not None:
            headers.append((_HL, hl))
    elif header_length is not None:
        headers.append((_HL, str(header_length).encode()))
    return Response(up.status, body, headers, up.headers.get(b"content-type", b"application/json"))


def _is_not_served(resp: UpstreamResponse) -> bool:
    if resp.status in _RETRYABLE_STATUS:
        return True
    if resp.status not in (400, 404):
        return False
    lowered = resp.body[:512].lower()
    return any(m in lowered for m in _NOT_SERVED_MARKERS)


def _response_size(response: Response) -> int:
    """What a cached response holds, in bytes (body and headers; the per-entry overhead of a few
    hundred bytes is left out)."""
    return len(response.body) + sum(len(n) + len(v) for n, v in response.headers) + len(response.content_type)


class _OnTheSpot:
    """A weighted request :meth:`Router.infer_now` forwards on callbacks: called with the first
    attempt's answer; :meth:`cancel` when its client has left.  Its fields are what a closure would
    hold (one object instead of a closure's cells)."""

    __slots__ = ("attempt_started", "body", "call", "endpoints", "header_length", "headers", "known",
                 "order", "parsed", "respond", "router", "sequence", "started", "table", "task")  # fmt: skip

    def __init__(
        self,
        router: Router,
        table: RoutingTable,
        order: list[VariantRuntime],
        endpoints: list[Endpoint],
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        header_length: int | None,
        parsed: bool,
        sequence: int | None,
        started: float,
        respond: Callable[[Response], None],
    ) -> None:
        self.router = router
        self.table = table
        self.order = order
        self.endpoints = endpoints
        self.known = order[0].endpoints()  # to see whether a push changes them meanwhile
        self.headers = headers
        self.body = body
        self.header_length = header_length
        self.parsed = parsed
        self.sequence = sequence
        self.started = started
        self.respond = respond
        self.attempt_started = 0.0
        self.call: UpstreamCall | None = None  # the first attempt, until it ends
        self.task: asyncio.Task[Response] | None = None  # the retries, after it failed

    def __call__(self, resp: UpstreamResponse | None, error: UpstreamError | None) -> None:
        """The first attempt's answer: respond, or go on with the retries in a task."""
        self.call = None
        router, table, variant, ep = self.router, self.table, self.order[0], self.endpoints[0]
        try:
            reason = router._attempt_end(variant, ep, self.attempt_started, resp, error)
            if reason is None:
                assert resp is not None
                response = router._weighted_response(
                    table, Answer(variant, resp), self.body, self.header_length, self.parsed
                )
                router.metrics.response(response.status, time.perf_counter() - self.started)
                self.respond(response)
                return
            rest = self.endpoints[1:]
            if variant.endpoints() is not self.known:  # a push or the EndpointSlice changed them
                rest = [e for e in variant.order_for(self.sequence) if e is not ep]
            timed_out = isinstance(error, UpstreamTimeout)
            later = router._weighted(
                table, self.order if rest else self.order[1:], rest or None, [reason], timed_out,
                self.headers, self.body, self.header_length, self.parsed, self.sequence,
            )  # fmt: skip
            self.task = router._answer_later(later, self.started, self.respond)
        except Exception:
            logger.exception("routing an inference request failed")
            self.respond(error_response(500, "internal router error; see the router log"))

    def cancel(self) -> None:
        """The client left before the answer: cancel the attempt in flight (its upstream connection
        is closed) or the task that took over; nothing is answered."""
        task = self.task
        if task is not None:
            task.cancel()  # _first_answer books the attempt it cuts
            return
        call = self.call
        if call is not None:
            self.call = None
            call.cancel()
            self.router._attempt_cut(self.order[0], self.endpoints[0])


class Router:
    """Routes inference requests for one pool according to the active :class:`RouterConfig`."""

    def __init__(
        self, config: RouterConfig, metrics_registry: Any = None, scorer_factory: ScorerFactory | None = None
    ) -> None:
        """``scorer_factory`` loads a torch scorer from its config's ``path`` (None: the built-in
        :func:`~modelpool.routing.scoring.builtin_factory`); whoever deploys the router chooses it
        (``--scorer-factory``), a config cannot."""
        self._scorer_factory = scorer_factory
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self._slice_sources: dict[tuple[str, str, str], EndpointSliceSource] = {}
        self._probing: set[tuple[str, str]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        self._breaker_opened = asyncio.Event()  # the probe loop sleeps on it while no breaker is open
        self._answering: set[asyncio.Task[Response]] = set()  # hot-path requests that went on in a task
        self._started = False
        self._breaker_config = config.breaker  # for endpoints created from now on
        scorer = _load_scorer(config, scorer_factory) if _uses_scorer(config) else None
        self.table = self._build(config, scorer, _new_cache(config))
        self.metrics = RouterMetrics(
            config.pool,
            lambda: self.table.config.generation,
            self._endpoint_states,
            metrics_registry,
            policy=lambda: self.table.config.policy,
        )
        self.metrics.expect_variants(self.table.variants)

    # ---------------------------------------------------------------- config
    @property
    def config(self) -> RouterConfig:
        return self.table.config

    def endpoint(self, triton_model: str, url: str) -> Endpoint:
        """The shared state of ``url`` serving ``triton_model`` (kept across config changes)."""
        key = (triton_model, url)
        ep = self._endpoints.get(key)
        if ep is None:
            ep = Endpoint(url, self._breaker_config)
            self._endpoints[key] = ep
        return ep

    def _build(
        self, config: RouterConfig, scorer: ComplexityScorer | None, cache: TTLCache[Response] | None
    ) -> RoutingTable:
        sources: dict[str, EndpointSource] = {}
        for v in config.variants:
            if v.endpoint_slice is not None:
                s = v.endpoint_slice
                key = (s.namespace, s.service, str(s.port))
                source = self._slice_sources.get(key) or EndpointSliceSource(s, self._forget_unused)
                self._slice_sources[key] = source
                sources[v.name] = source
            else:
                sources[v.name] = StaticSource(v.endpoints)
        return RoutingTable(config, self, sources, scorer, cache)

    def check_source(self, config: RouterConfig) -> None:
        """Raise :class:`ConfigRejected` when ``config`` comes from another RoutingPolicy than the
        active one, or is for another pool (whatever its generation).

        A router belongs to the first policy that programs it: one started from a config without a
        policy (a file of its own) takes the first config with one, and from then on a config of
        another policy, or of none, is refused until the router restarts.  A policy deleted and
        created again under its name still programs it."""
        active = self.table.config
        if active.policy is not None and config.policy != active.policy:
            raise ConfigRejected(_policy_conflict(active.policy, config.policy))
        if config.pool != active.pool:
            raise ConfigRejected(
                f"pool: this router serves pool {active.pool!r}, the push is for {config.pool!r}"
            )

    def _admit(self, config: RouterConfig) -> bool:
        """May ``config`` replace the active one?  False when it is the active one (same generation
        and content); :class:`ConfigRejected` for another policy or pool, or an older generation."""
        self.check_source(config)
        active = self.table.config
        if config.generation < active.generation:
            raise ConfigRejected(
                f"generation: {config.generation} is older than the active generation {active.generation}"
            )
        return config != active

    def _kept_scorer(self, config: RouterConfig) -> ComplexityScorer | None:
        """The active scorer when ``config`` asks for the same one (no reload), else None."""
        table = self.table
        if table.scorer is not None and _uses_scorer(config) and config.scorer == table.config.scorer:
            return table.scorer
        return None

    def apply(self, config: RouterConfig) -> bool:
        """Replace the active config; False when it is the same generation and content (no-op).

        Raises :class:`ConfigRejected` for another policy, another pool or an older generation
        (:meth:`check_source`), and :class:`ConfigError` when the config cannot be built (the old
        one stays).  A new scorer loads in the calling thread: on the event loop, use
        :meth:`apply_async`.
        """
        if not self._admit(config):
            return False
        scorer = self._kept_scorer(config)
        if scorer is None and _uses_scorer(config):
            scorer = _load_scorer(config, self._scorer_factory)
        self._activate(config, scorer)
        return True

    async def apply_async(self, config: RouterConfig) -> bool:
        """:meth:`apply`, loading a new scorer (a torch model: seconds) in a worker thread, so the
        event loop goes on answering on the active config meanwhile.  The checks run again once it
        is loaded: a config activated meanwhile (a newer push) is not replaced by an older one."""
        if not self._admit(config):
            return False
        scorer = self._kept_scorer(config)
        if scorer is None and _uses_scorer(config):
            scorer = await asyncio.to_thread(_load_scorer, config, self._scorer_factory)
            if not self._admit(config):
                return False
        self._activate(config, scorer)
        return True

    def _activate(self, config: RouterConfig, scorer: ComplexityScorer | None) -> None:
        """Swap in the table of ``config`` (admitted, its scorer loaded) in one step on the loop.
        The response cache stays when the answers it holds cannot have changed (:func:`_answer_key`)."""
        active = self.table.config
        same_answers = _answer_key(config) == _answer_key(active)
        table = self._build(config, scorer, self.table.cache if same_answers else _new_cache(config))
        self._breaker_config = config.breaker
        if config.breaker != active.breaker:
            b = config.breaker
            for ep in self._endpoints.values():  # the endpoints kept across the push too
                ep.breaker.configure(b.failure_threshold, b.open_seconds, b.max_open_seconds)
                if ep.breaker.state is BreakerState.OPEN:  # a lower threshold opened it: probe it
                    self._breaker_opened.set()
        for name, variant in self.table.variants.items():
            newer = table.variants.get(name)
            if newer is not None and newer.config.triton_model == variant.config.triton_model:
                # requests still on the superseded table retry on the variant's endpoints of now
                variant.source = newer.source
        self.table = table
        self.metrics.forget_variants(table.variants)
        self.metrics.expect_variants(table.variants)
        self._forget_unused()
        if self._started:
            for variant in table.variants.values():
                asyncio.get_running_loop().create_task(variant.source.start())
        logger.info("config generation %d active (%s mode)", config.generation, config.mode)

    def _forget_unused(self) -> None:
        """Close and forget the endpoints no variant lists any more, and the unused slice watches.

        Runs on each config change and each time an EndpointSlice drops or adds a replica: a
        replica the autoscaler removed leaves its slice, and the connections kept to it are
        closed (in-flight ones once they answer), so its Triton can exit instead of waiting out
        its exit timeout for them; and the router does not keep an entry per replica it ever saw.
        """
        listed = {
            (v.config.triton_model, url) for v in self.table.variants.values() for url in v.source.urls()
        }
        for ep_key, ep in list(self._endpoints.items()):
            if ep_key not in listed:
                ep.client.close()
                del self._endpoints[ep_key]
        used_slices = {
            (s.namespace, s.service, str(s.port))
            for v in self.table.config.variants
            if (s := v.endpoint_slice) is not None
        }
        for key, source in list(self._slice_sources.items()):
            if key not in used_slices:
                del self._slice_sources[key]
                if self._started:
                    asyncio.get_running_loop().create_task(source.stop())

    def _endpoint_states(self) -> list[tuple[str, str, bool]]:
        return [
            (v.name, e.url, e.breaker.allows()) for v in self.table.variants.values() for e in v.endpoints()
        ]

    def status(self) -> dict[str, Any]:
        """Active generation and the variants' endpoints with breaker states."""
        return {
            "generation": self.config.generation,
            "pool": self.config.pool,
            "mode": self.config.mode,
            "modelName": self.config.model_name,
            "variants": {
                v.name: [{"url": e.url, "breaker": e.breaker.state.value} for e in v.endpoints()]
                for v in self.table.variants.values()
            },
        }

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start endpoint watches and the breaker probe loop."""
        self._started = True
        for variant in self.table.variants.values():
            await variant.source.start()
        self._breaker_opened = asyncio.Event()  # bound to this loop
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def stop(self) -> None:
        self._started = False
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        for source in self._slice_sources.values():
            await source.stop()
        for ep in self._endpoints.values():
            ep.client.close()

    async def _probe_loop(self, interval: float = 0.1) -> None:
        """Every ``interval`` while some breaker is open, probe the endpoints whose wait is over;
        no wake-ups at all while every breaker is closed or half-open."""
        while True:
            if not any(ep.breaker.state is BreakerState.OPEN for ep in self._endpoints.values()):
                self._breaker_opened.clear()
                await self._breaker_opened.wait()
            await asyncio.sleep(interval)
            for key, ep in list(self._endpoints.items()):
                if key not in self._probing and ep.breaker.probe_due():
                    self._probing.add(key)
                    asyncio.get_running_loop().create_task(self._probe(key, ep))

    async def _probe(self, key: tuple[str, str], ep: Endpoint) -> None:
        """Active health check of an open endpoint: is its model ready there?"""
        try:
            resp = await ep.client.request(b"GET", f"/v2/models/{key[0]}/ready".encode(), [], b"", 1.0)
            ok = resp.status == 200
        except UpstreamError:
            ok = False
        finally:
            self._probing.discard(key)
        ep.breaker.on_probe(ok)

    # ---------------------------------------------------------------- forwarding
    def _attempt_begin(self, ep: Endpoint) -> float:
        """Book an attempt on ``ep`` (in-flight count, breaker); its start time."""
        ep.outstanding += 1
        ep.breaker.on_send()
        return time.perf_counter()

    def _attempt_end(
        self,
        variant: VariantRuntime,
        ep: Endpoint,
        started: float,
        resp: UpstreamResponse | None,
        error: UpstreamError | None,
    ) -> str | None:
        """Book the attempt's outcome (count, breaker, metrics); ``None`` when it answered, else
        the reason it failed (see the module doc for what counts as a failure)."""
        ep.outstanding -= 1
        if error is not None:
            kind = "timeout" if isinstance(error, UpstreamTimeout) else "connect"
            detail = str(error)
        else:
            assert resp is not None
            kind = ""
            if resp.status >= 400 and _is_not_served(resp):
                kind = "http_5xx" if resp.status >= 500 else "not_served"
                detail = f"HTTP {resp.status} {resp.body[:200].decode('utf-8', 'replace')}"
        self.metrics.attempt(variant.name, time.perf_counter() - started, kind or None)
        breaker = ep.breaker
        if not kind:
            breaker.on_success()
            return None
        breaker.on_failure()
        if breaker.state is BreakerState.OPEN:
            self._breaker_opened.set()
        return f"{variant.name} at {ep.url}: {kind} ({detail})"

    def _attempt_cut(self, variant: VariantRuntime, ep: Endpoint) -> None:
        """The client left while the attempt was in flight, and it was cancelled: counted as a
        client disconnect only, neither an answer nor a failure (the breaker's half-open trial
        slot, if it had it, is free again)."""
        ep.outstanding -= 1
        ep.breaker.on_cancel()
        self.metrics.client_disconnect(variant.name, variant.tier)

    async def _first_answer(
        self,
        order: Sequence[VariantRuntime],
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        first_endpoints: list[Endpoint] | None = None,
        failed: list[str] | None = None,
        timed_out: bool = False,
        sequence: int | None = None,
    ) -> Answer:
        """Try the variants in order (each one's endpoints, least busy first) until one answers.

        ``first_endpoints``: the endpoints of ``order[0]`` still to try, when the caller already
        has them.  ``failed``: reasons of attempts the caller already made (they count against
        ``retry.maxAttempts``), ``timed_out`` whether the last of them timed out.  A failure is
        a reason in the final :class:`NoAnswer`.  ``sequence``: a sequence request's hash; each
        variant's endpoints are then tried in the sequence's own order.  Cancelled (the client
        left), it cancels the attempt in flight.
        """
        reasons = failed if failed is not None else []
        attempts_left = self.table.config.retry.max_attempts - len(reasons)
        for variant in order:
            if first_endpoints is not None:
                endpoints, first_endpoints = first_endpoints, None
            else:
                endpoints = variant.order_for(sequence)
            if not endpoints:
                known = variant.endpoints()
                reasons.append(
                    f"{variant.name}: no ready endpoint"
                    if not known
                    else f"{variant.name}: every endpoint's circuit is open"
                )
                continue
            known = variant.endpoints()
            tried: list[Endpoint] = []
            i = 0
            while i < len(endpoints) and attempts_left > 0:
                ep = endpoints[i]
                i += 1
                attempts_left -= 1
                started = self._attempt_begin(ep)
                resp: UpstreamResponse | None = None
                error: UpstreamError | None = None
                try:
                    resp = await ep.client.request(b"POST", variant.path, headers, body, variant.timeout)
                except UpstreamError as err:
                    error = err
                except asyncio.CancelledError:
                    self._attempt_cut(variant, ep)
                    raise
                except BaseException:
                    ep.outstanding -= 1
                    raise
                reason = self._attempt_end(variant, ep, started, resp, error)
                if reason is None:
                    assert resp is not None
                    return Answer(variant, resp)
                reasons.append(reason)
                timed_out = isinstance(error, UpstreamTimeout)
                tried.append(ep)
                if variant.endpoints() is not known:  # a push or the EndpointSlice changed them
                    known = variant.endpoints()
                    endpoints, i = [e for e in variant.order_for(sequence) if e not in tried], 0
        raise NoAnswer(504 if timed_out else 503, reasons)

    # ---------------------------------------------------------------- modes
    async def _direct(
        self, table: RoutingTable, name: str, raw: bytes, headers: list[tuple[bytes, bytes]], **params: Any
    ) -> Response:
        self._meant_for(table.variants[name])  # the tier the score chose
        answer = await self._first_answer(table.fallbacks[name], headers, raw)
        self._account(table, answer.variant, answer.variant.cost)
        return self._annotated(table, answer, variant=answer.variant.name, **params)

    def _annotated(self, table: RoutingTable, answer: Answer, drop: bool = False, **params: Any) -> Response:
        if answer.response.status != 200:
            return _client_response(answer)
        try:
            body = parse_response(answer.response.body, parse_header_length(answer.response.headers.get(_HL)))
        except BadRequest:
            return _client_response(answer)
        if drop:
            drop_output(body, PROBABILITIES_OUTPUT)
        annotate(body, table.config.model_name, **{f"modelpool_{k}": v for k, v in params.items()})
        data, hl = body.encode()
        return _client_response(answer, data, hl)

    async def _cascade(
        self, table: RoutingTable, request: InferBody, raw: bytes, headers: list[tuple[bytes, bytes]],
        **params: Any,
    ) -> Response:  # fmt: skip
        cascade = table.config.cascade
        assert cascade is not None
        draft, verifier = table.variants[cascade.draft], table.variants[cascade.verifier]
        added = ensure_output(request, PROBABILITIES_OUTPUT)
        draft_body, draft_headers = raw, headers
        if added:
            draft_body, hl = request.encode()
            draft_headers = _upstream_headers({b"content-type": headers[0][1]}, hl)
        order = [draft, verifier] if table.config.retry.cross_variant else [draft]
        self._meant_for(draft)
        first = await self._first_answer(order, draft_headers, draft_body)
        if first.variant is not draft or first.response.status != 200:
            # the draft could not answer; whoever did is the answer (no cascade decision)
            self._account(table, first.variant, first.variant.cost)
            return self._annotated(
                table, first, drop=added, variant=first.variant.name, escalated=False, **params
            )
        try:
            parsed = parse_response(first.response.body, parse_header_length(first.response.headers.get(_HL)))
            conf = confidence(parsed)
        except BadRequest:
            conf = None
        if keeps_draft(conf, cascade.accept_threshold):
            self.metrics.cascade("accepted")
            self._account(table, draft, draft.cost)
            return self._annotated(
                table, first, drop=added, variant=draft.name, escalated=False, confidence=conf, **params
            )
        self._meant_for(verifier)  # the escalation
        try:
            second = await self._first_answer(table.fallbacks[verifier.name][:1] + [
                v for v in table.fallbacks[verifier.name][1:] if v is not draft
            ], headers, raw)  # fmt: skip
        except NoAnswer as err:
            logger.warning(
                "cascade escalation failed, keeping the draft's answer: %s", "; ".join(err.reasons)
            )
            self.metrics.cascade("escalation_failed")
            self._account(table, draft, draft.cost)
            return self._annotated(
                table, first, drop=added, variant=draft.name, escalated=False, escalation_failed=True,
                confidence=conf, **params,
            )  # fmt: skip
        self.metrics.cascade("escalated")
        self._account(table, second.variant, draft.cost + second.variant.cost)
        return self._annotated(
            table, second, variant=second.variant.name, escalated=True, draft_confidence=conf, **params
        )

    async def _tiered(
        self, table: RoutingTable, request: InferBody, raw: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Response:
        assert table.scorer is not None
        texts = request_texts(request)
        if table.scorer_blocking:
            try:
                scores = await asyncio.to_thread(table.scorer.score, texts)
            except asyncio.CancelledError:  # the client left before any upstream attempt
                self.metrics.client_disconnect("", "")
                raise
        else:
            scores = table.scorer.score(texts)
        for s in scores:
            self.metrics.score(s)
        score = max(scores) if scores else 0.0
        target = tier_target(score, table.config.tiers)
        if target == CASCADE_TARGET:
            return await self._cascade(table, request, raw, headers, complexity=round(score, 4))
        return await self._direct(table, target, raw, headers, complexity=round(score, 4))

    async def _sequence(
        self, table: RoutingTable, sequence: int, raw: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Response:
        """Tiered and cascade modes: a sequence request goes to its sequence's variant and endpoint
        (no scoring, no cascade: every request of a sequence must reach one Triton instance)."""
        order, endpoints = self._pick_sequence(table, sequence)
        answer = await self._first_answer(order, headers, raw, endpoints, sequence=sequence)
        self._account(table, answer.variant, answer.variant.cost)
        return self._annotated(table, answer, variant=answer.variant.name, escalated=False)

    def _meant_for(self, variant: VariantRuntime) -> None:
        """The policy chose ``variant`` for a request: count it in ``unavailable_requests_total``
        when the variant has no available endpoint (none listed, e.g. at zero replicas, or every
        breaker open), so its demand shows although no attempt goes to it."""
        if not variant.can_take():
            self.metrics.unavailable_request(variant.name)

    def _account(self, table: RoutingTable, variant: VariantRuntime, cost: float) -> None:
        self.metrics.answered(variant.name, variant.tier, cost, table.baseline_cost)

    # ---------------------------------------------------------------- entry point
    async def infer(self, body: bytes, request_headers: dict[bytes, bytes]) -> Response:
        """Route one inference request (body as received) and return the client's response."""
        table = self.table
        started = time.perf_counter()
        try:
            hl = request_headers.get(_HL)
            header_length = None if hl is None else parse_header_length(hl)
            request = parse_request(body, header_length) if table.parse_requests else None
            seq = sequence_key(request.header) if request is not None else find_sequence(body, header_length)
            sequence = None if seq is None else stable_hash(seq)
            cache_key = cached = None
            if table.cache is not None and sequence is None:  # a sequence's answers depend on its state
                cache_key = hashlib.blake2b(
                    str(header_length).encode() + b"|" + body, digest_size=16
                ).digest()
                cached = table.cache.get(cache_key)
                self.metrics.cache(cached is not None)
            if cached is not None:  # no early return: the response metrics below count it too
                hit_headers = [*cached.headers, (b"x-modelpool-cache", b"hit")]
                response = Response(cached.status, cached.body, hit_headers, cached.content_type)
                cache_key = None  # nothing new to store
            else:
                headers = _upstream_headers(request_headers, header_length)
                mode = table.config.mode
                if mode == "weighted":
                    if sequence is None:
                        order, endpoints = self._pick_weighted(table)
                    else:
                        order, endpoints = self._pick_sequence(table, sequence)
                    response = await self._weighted(
                        table, order, endpoints, [], False, headers, body, header_length, request is not None,
                        sequence,
                    )  # fmt: skip
                elif sequence is not None:
                    response = await self._sequence(table, sequence, body, headers)
                elif request is None:  # pragma: no cover - parse_requests is set for these modes
                    raise AssertionError("tiered and cascade modes parse requests")
                elif mode == "cascade":
                    response = await self._cascade(table, request, body, headers)
                else:
                    response = await self._tiered(table, request, body, headers)
        except BadRequest as err:
            response = error_response(err.status, str(err))
        except NoAnswer as err:
            response = self._no_answer_response(table, err)
        else:
            if cache_key is not None and table.cache is not None and response.status == 200:
                table.cache.put(cache_key, response, _response_size(response))
        self.metrics.response(response.status, time.perf_counter() - started)
        return response

    def infer_now(
        self, body: bytes, request_headers: dict[bytes, bytes], respond: Callable[[Response], None]
    ) -> Cancellable | None:
        """The hot path: a weighted-mode request forwarded on callbacks, with no task and no
        coroutine, when the picked endpoint has an idle connection.  ``respond`` gets the
        response once, unless the returned handle is cancelled first (the client left: the
        upstream attempt, or the task that took over, is cancelled).  Anything else (a failed first
        attempt, no idle connection) goes on in the same way :meth:`infer` does, in a task.  None
        when :meth:`infer` must take it (other modes, the response cache)."""
        table = self.table
        if table.config.mode != "weighted" or table.cache is not None:
            return None
        started = time.perf_counter()
        hl = request_headers.get(_HL)
        parsed = table.parse_requests  # validateRequests: true
        try:
            header_length = None if hl is None else parse_header_length(hl)
            if parsed:
                seq = sequence_key(parse_request(body, header_length).header)
            else:
                seq = find_sequence(body, header_length)
        except BadRequest:
            return None  # infer() answers it
        headers = _upstream_headers(request_headers, header_length)
        if seq is None:
            sequence = None
            order, endpoints = self._pick_weighted(table)
        else:
            sequence = stable_hash(seq)
            order, endpoints = self._pick_sequence(table, sequence)
        if endpoints and endpoints[0].client.has_idle():
            variant, ep = order[0], endpoints[0]
            spot = _OnTheSpot(
                self, table, order, endpoints, headers, body, header_length, parsed, sequence, started,
                respond,
            )  # fmt: skip
            spot.attempt_started = self._attempt_begin(ep)
            call = ep.client.start(b"POST", variant.path, headers, body, variant.timeout, spot)
            if call is not None:
                spot.call = call
                return spot
            ep.outstanding -= 1  # not after has_idle(); but never leave a request unanswered
        work = self._weighted(
            table, order, endpoints, [], False, headers, body, header_length, parsed, sequence
        )
        return self._answer_later(work, started, respond)

    def _pick_weighted(self, table: RoutingTable) -> tuple[list[VariantRuntime], list[Endpoint] | None]:
        """Smooth weighted round robin: the picked variant's fallback order and its endpoints
        (``None``: it has none available).

        One pick per request, among the variants that can take it: a variant with no available
        endpoint is left out of the round (its score stands still), so its share goes to the others
        in proportion to their weights, and the sequence stays deterministic.  When none can take
        it, the pick is among all (the request then fails over and gets 503).

        While some variant cannot take requests, a second round over every weighted variant
        (``table.meant``, with state of its own) says which one the request was meant for by the
        weights; when that one cannot take it, the request counts in its
        ``unavailable_requests_total`` (its demand, which the scaler reads: a variant at zero
        replicas gets no attempt).  With every variant available (the usual case) neither the
        second round nor the count costs anything."""
        swrr = table.swrr
        assert swrr is not None
        weighted = table.weighted
        for i, variant in enumerate(weighted):
            if not variant.can_take():
                ready = [v.name for v in weighted[:i]]
                ready += [v.name for v in weighted[i + 1 :] if v.can_take()]
                name = swrr.pick(ready) or swrr.pick()
                assert table.meant is not None
                meant = table.meant.pick()
                if meant is not None and meant not in ready:
                    self.metrics.unavailable_request(meant)
                break
        else:
            name = swrr.pick()
        assert name is not None
        endpoints = table.variants[name].attempt_order()
        return table.fallbacks[name], endpoints or None

    def _pick_sequence(
        self, table: RoutingTable, sequence: int
    ) -> tuple[list[VariantRuntime], list[Endpoint] | None]:
        """Where a sequence request (``sequence``: its id's :func:`stable_hash`) goes: its variant's
        fallback order and that variant's endpoints in the sequence's order (``None``: none
        available).  No state: weighted rendezvous hashing over ``table.sequence_variants`` picks
        the variant (each with the share of sequences its weight gives it), rendezvous hashing over
        its endpoints the endpoint, so every request of a sequence, on any router, goes to the same
        Triton instance, and only the sequences of an endpoint that leaves (or whose breaker opens)
        move, each to its own next choice.  A variant that cannot take requests is passed over
        the same way (and the request counts in the first choice's ``unavailable_requests_total``);
        when none can, the first choice (the request then fails over and gets 503)."""
        ranked = weighted_rendezvous_order(sequence, table.sequence_variants)
        variant = ranked[0]
        if not variant.can_take():
            self.metrics.unavailable_request(variant.name)
            variant = next((v for v in ranked[1:] if v.can_take()), variant)
        endpoints = variant.sequence_order(sequence)
        return table.fallbacks[variant.name], endpoints or None

    async def _weighted(
        self,
        table: RoutingTable,
        order: list[VariantRuntime],
        endpoints: list[Endpoint] | None,
        failed: list[str],
        timed_out: bool,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        header_length: int | None,
        parsed: bool,
        sequence: int | None = None,
    ) -> Response:
        """A weighted request from its pick (and any failed attempts) to the client's response."""
        try:
            answer = await self._first_answer(order, headers, body, endpoints, failed, timed_out, sequence)
        except NoAnswer as err:
            return self._no_answer_response(table, err)
        return self._weighted_response(table, answer, body, header_length, parsed)

    def _weighted_response(
        self, table: RoutingTable, answer: Answer, body: bytes, header_length: int | None, parsed: bool
    ) -> Response:
        self._account(table, answer.variant, answer.variant.cost)
        response = _client_response(answer)
        if response.status >= 500 and not parsed:
            # Triton answers some malformed bodies with 500: check it here, so the client gets a
            # 400 naming the problem (a model's own 500 on a valid body passes through)
            try:
                parse_request(body, header_length)
            except BadRequest as err:
                return error_response(err.status, str(err))
        return response

    def _no_answer_response(self, table: RoutingTable, err: NoAnswer) -> Response:
        what = "timed out" if err.status == 504 else "is unavailable"
        return error_response(
            err.status,
            f"no variant of pool {table.config.pool!r} could answer: every route {what} "
            f"[{'; '.join(err.reasons) or 'no variant has endpoints'}]",
        )

    def _answer_later(
        self, work: Coroutine[Any, Any, Response], started: float, respond: Callable[[Response], None]
    ) -> asyncio.Task[Response]:
        """Answer in a task (cancelled when the client leaves; then nothing is answered)."""
        task = asyncio.get_running_loop().create_task(work)
        self._answering.add(task)
        task.add_done_callback(partial(self._answered_later, started, respond))
        return task

    def _answered_later(
        self, started: float, respond: Callable[[Response], None], task: asyncio.Task[Response]
    ) -> None:
        self._answering.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("routing an inference request failed", exc_info=error)
            response = error_response(500, "internal router error; see the router log")
        else:
            response = task.result()
        self.metrics.response(response.status, time.perf_counter() - started)
        respond(response)

    async def forward_get(self, suffix: str) -> Response:
        """GET ``/v2/models/<model><suffix>`` on the first variant that answers (metadata, config, ready)."""
        table = self.table
        reasons: list[str] = []
        for variant in table.fallbacks[table.config.baseline_variant().name]:
            for ep in variant.attempt_order():
                path = f"/v2/models/{variant.config.triton_model}{suffix}".encode()
                try:
                    resp = await ep.client.request(b"GET", path, [], b"", variant.timeout)
                except UpstreamError as err:
                    reasons.append(f"{variant.name} at {ep.url}: {err}")
                    continue
                if _is_not_served(resp):  # as for inference: 502/503/504, or the model is not loaded there
                    reasons.append(f"{variant.name} at {ep.url}: HTTP {resp.status}")
                    continue
                return _client_response(Answer(variant, resp))
        return error_response(503, f"no variant of pool {table.config.pool!r} answered: {'; '.join(reasons)}")

    def model_ready(self) -> bool:
        """Can any variant take a request now (some endpoint with a closed or half-open breaker)?"""
        return any(v.available() for v in self.table.variants.values())
