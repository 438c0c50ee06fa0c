"""The router's HTTP front: KServe v2 routes, ``/metrics`` and the admin API.

Routes:

* ``GET /v2/health/live``, ``GET /v2/health/ready`` (ready once a config is active),
  ``GET /v2`` (server metadata);
* ``GET /v2/models/{name}`` (and ``/config``, ``/stats`` ...: forwarded to a variant),
  ``GET /v2/models/{name}/ready`` (some variant can answer),
  ``POST /v2/models/{name}[/versions/{v}]/infer`` (routed);
* ``GET /metrics`` (Prometheus text);
* ``PUT /admin/config`` (a new :class:`~modelpool.routing.config.RouterConfig`, JSON or YAML)
  and ``GET /admin/config`` (active generation and endpoints), both with
  ``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import generate_latest

from modelpool.routing.config import ConfigError, RouterConfig, load_config_file, parse_config_bytes
from modelpool.routing.fdlimit import fit_connections
from modelpool.routing.httpserver import (
    DRAIN_SECONDS,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    Cancellable,
    HttpServer,
    Request,
    Respond,
    Response,
    error_response,
    json_response,
    start_server,
)
from modelpool.routing.router import ConfigRejected, Router
from modelpool.routing.scoring import ScorerFactory
from modelpool.routing.v2 import BadRequest, decode_content

logger = logging.getLogger(__name__)

TOKEN_ENV = "MODELPOOL_ROUTER_ADMIN_TOKEN"
_MODELS = b"/v2/models/"
# The GETs under /v2/models/<model> that go on to a variant (Triton's routes; nothing else, so a
# crafted suffix such as /../../metrics reaches no other path of the upstream).
_METADATA = re.compile(rb"(/versions/[0-9]+)?")
_MODEL_GET = re.compile(rb"(/versions/[0-9]+)?(/ready|/config|/stats|/trace/setting)?")
_ENCODING = b"content-encoding"
_SERVER_METADATA = {"name": "modelpool-router", "version": "1", "extensions": ["binary_tensor_data"]}
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def read_admin_token(token_file: Path | None) -> str | None:
    """The admin token from a file (a mounted Secret) or ``$MODELPOOL_ROUTER_ADMIN_TOKEN``."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"admin token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class RouterApp:
    """Dispatches HTTP requests to the router; owns the admin API and the config file watch."""

    def __init__(self, router: Router, admin_token: str | None, config_path: Path | None = None) -> None:
        self.router = router
        self._token = admin_token.encode() if admin_token else None
        self._config_path = config_path
        self._config_mtime = config_path.stat().st_mtime_ns if config_path is not None else 0
        self._file_refusal: str | None = None  # the last reason logged for skipping the file
        self._model_prefix = b""
        self._infer_path = b""
        self._refresh_prefix()

    def _refresh_prefix(self) -> None:
        self._model_prefix = _MODELS + self.router.config.model_name.encode()
        self._infer_path = self._model_prefix + b"/infer"

    def max_body(self) -> int:
        return self.router.table.config.max_body_bytes

    def handle(self, req: Request) -> Awaitable[Response]:
        """The response to ``req``; an inference request goes straight to the router's coroutine
        (no coroutine of its own in between: this is the hot path)."""
        if req.path == self._infer_path and req.method == b"POST":
            return self._infer(req)
        return self._handle(req)

    def handle_now(self, req: Request, respond: Respond) -> Cancellable | None:
        """Inference requests the router can forward on the spot (see :meth:`Router.infer_now`)."""
        if req.path == self._infer_path and req.method == b"POST" and _ENCODING not in req.headers:
            return self.router.infer_now(req.body, req.headers, respond)
        return None

    def _infer(self, req: Request) -> Awaitable[Response]:
        if _ENCODING in req.headers:
            return self._infer_compressed(req)
        return self.router.infer(req.body, req.headers)

    async def _infer_compressed(self, req: Request) -> Response:
        """A compressed request goes on decompressed (upstream and the router's parser see JSON)."""
        try:
            body = decode_content(req.body, req.headers[_ENCODING], self.max_body())
        except BadRequest as err:
            return error_response(err.status, str(err))
        return await self.router.infer(body, req.headers)

    async def _handle(self, req: Request) -> Response:
        path = req.path
        if path.startswith(self._model_prefix):
            rest = path[len(self._model_prefix) :]
            if rest == b"/infer" or (rest.startswith(b"/versions/") and rest.endswith(b"/infer")):
                if req.method != b"POST":
                    return error_response(405, "use POST for /infer")
                return await self._infer(req)
            if req.method == b"GET":
                if rest == b"/ready":
                    ready = self.router.model_ready()
                    return Response(200 if ready else 503)
                if _MODEL_GET.fullmatch(rest):
                    return await self._model_get(rest)
                if rest.startswith(b"/"):
                    return error_response(
                        404,
                        f"no route for GET {path.decode('utf-8', 'replace')}: a model's GETs are its "
                        "metadata, /ready, /config, /stats and /trace/setting, after /versions/<n> or not",
                    )
        if path.startswith(_MODELS):
            name = path[len(_MODELS) :].split(b"/", 1)[0].decode("utf-8", "replace")
            return error_response(
                404, f"unknown model {name!r}: this router serves {self.router.config.model_name!r}"
            )
        if req.method == b"GET":
            if path == b"/v2/health/live":
                return Response(200)
            if path == b"/v2/health/ready":
                return Response(200)
            if path == b"/v2":
                return json_response(
                    200, {"name": "modelpool-router", "version": "1", "extensions": ["binary_tensor_data"]}
                )
            if path == b"/metrics":
                return Response(
                    200, generate_latest(self.router.metrics.registry), content_type=_METRICS_TYPE
                )
        if path == b"/admin/config":
            return await self._admin(req)
        return error_response(404, f"no route for {req.method.decode()} {path.decode('utf-8', 'replace')}")

    async def _model_get(self, rest: bytes) -> Response:
        response = await self.router.forward_get(rest.decode())
        if _METADATA.fullmatch(rest) and response.status == 200:  # metadata: name the pool's model
            import json

            with contextlib.suppress(ValueError):
                meta = json.loads(response.body)
                if isinstance(meta, dict):
                    meta["name"] = self.router.config.model_name
                    response = json_response(200, meta, response.headers)
        return response

    # ------------------------------------------------------------------ admin
    def _authorized(self, req: Request) -> Response | None:
        if self._token is None:
            return error_response(403, "the admin API is disabled: start the router with --admin-token-file")
        auth = req.headers.get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            return error_response(401, "admin API: missing or wrong 'Authorization: Bearer <token>'")
        return None

    async def _admin(self, req: Request) -> Response:
        denied = self._authorized(req)
        if denied is not None:
            return denied
        if req.method == b"GET":
            return json_response(200, {**self.router.status(), "config": self.router.config.to_json()})
        if req.method != b"PUT":
            return error_response(405, "use GET or PUT on /admin/config")
        try:
            config = parse_config_bytes(req.body)
            changed = await self.apply_async(config)
        except ConfigError as err:
            return json_response(
                422, {"error": f"config rejected, the active one stays: {err}", "problems": err.problems}
            )
        except ConfigRejected as err:
            return json_response(409, {"error": f"config rejected, the active one stays: {err}"})
        return json_response(200, {"generation": config.generation, "changed": changed})

    def apply(self, config: RouterConfig) -> bool:
        """Activate ``config`` (see :meth:`Router.apply`: a new scorer loads in this thread)."""
        changed = self.router.apply(config)
        self._refresh_prefix()
        return changed

    async def apply_async(self, config: RouterConfig) -> bool:
        """Activate ``config`` (see :meth:`Router.apply_async`: a new scorer loads off the loop,
        which answers on the active config meanwhile)."""
        changed = await self.router.apply_async(config)
        self._refresh_prefix()
        return changed

    async def watch_config_file(self, interval: float = 2.0) -> None:
        """Re-read the mounted config file when it changes (ConfigMap updates), every ``interval``
        seconds (see :meth:`reload_config_file`)."""
        if self._config_path is None:
            return
        while True:
            await asyncio.sleep(interval)
            await self.reload_config_file()

    async def reload_config_file(self) -> None:
        """Apply the config file if its mtime changed and its generation is newer than the active
        one.  A version that cannot be applied, for whatever reason (another policy's or pool's
        even when older), is logged and skipped; the same reason again is not logged again."""
        if self._config_path is None:
            return
        try:
            mtime = self._config_path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            config = load_config_file(self._config_path)
            self.router.check_source(config)
            if config.generation > self.router.config.generation:
                await self.apply_async(config)
        except (ConfigError, ConfigRejected) as err:
            self._file_refused(str(err))
        except Exception as err:  # whatever goes wrong with one version of the file, keep watching
            self._file_refused(f"applying it failed: {type(err).__name__}: {err}", logging.ERROR)
        else:
            self._file_refusal = None

    def _file_refused(self, reason: str, level: int = logging.WARNING) -> None:
        """Log why the config file is skipped (with the traceback at ERROR: an unexpected error),
        unless that was the last reason logged."""
        if reason != self._file_refusal:
            exc_info = level >= logging.ERROR
            logger.log(level, "ignoring config file %s: %s", self._config_path, reason, exc_info=exc_info)
            self._file_refusal = reason


@dataclass
class RunningRouter:
    """A router serving on a port (for tests and embedding)."""

    app: RouterApp
    server: HttpServer
    port: int
    _watch: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def drain(self, limit_s: float) -> int:
        """Answer every request already received, then stop listening (``HttpServer.drain``)."""
        return await self.server.drain(limit_s)

    async def close(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self.server.close()
        await self.app.router.stop()


async def start_router(
    config: RouterConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    admin_token: str | None = None,
    config_path: Path | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    scorer_factory: ScorerFactory | None = None,
    max_connections: int = MAX_CONNECTIONS,
) -> RunningRouter:
    """Build a router for ``config`` and serve it on ``host:port`` (0 picks a free port); a client
    connection with no request for ``idle_timeout_s`` seconds is closed, and at most
    ``max_connections`` are open at once.  ``scorer_factory`` loads torch scorers (None: the
    built-in one; never a config's choice)."""
    router = Router(config, scorer_factory=scorer_factory)
    await router.start()
    app = RouterApp(router, admin_token, config_path)
    server = await start_server(
        app.handle, host, port, app.max_body, now=app.handle_now, idle_timeout_s=idle_timeout_s,
        max_connections=max_connections,
    )  # fmt: skip
    router.metrics.connections = lambda: (
        server.open_connections, server.max_connections, server.refused_connections(),
    )  # fmt: skip
    watch = asyncio.get_running_loop().create_task(app.watch_config_file())
    logger.info(
        "router for pool %s (generation %d) on %s:%d, at most %d client connections at once",
        config.pool, config.generation, host, server.port, max_connections,
    )  # fmt: skip
    return RunningRouter(app, server, server.port, watch)


def serve(
    config_path: Path,
    host: str,
    port: int,
    admin_token_file: Path | None,
    drain_seconds: float = DRAIN_SECONDS,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    *,
    scorer_factory: ScorerFactory | None = None,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Run the router until SIGINT/SIGTERM, then drain: answer every request already received
    (and any that arrive meanwhile, one per connection) before exiting, for at most
    ``drain_seconds``; idle client connections are closed after ``idle_timeout_s``, at most
    ``max_connections`` are open at once (fewer when the open-files limit cannot hold them even
    once raised: see :func:`~modelpool.routing.fdlimit.fit_connections`); torch scorers load with
    ``scorer_factory`` (None: the built-in one).  Uses uvloop when installed."""
    import signal

    config = load_config_file(config_path)  # never start empty: a bad file is an error
    token = read_admin_token(admin_token_file)

    async def main() -> None:
        files = fit_connections(max_connections)  # in the loop: its own descriptors are counted
        running = await start_router(
            config, host, port, token, config_path, idle_timeout_s, scorer_factory, files.max_connections
        )
        running.app.router.metrics.open_files_limit = files.soft
        # Fewer, later cyclic-GC passes over long-lived objects: steadier tail latency.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"modelpool router listening on http://{host}:{running.port}", flush=True)
        await stop.wait()
        started = loop.time()
        left = await running.drain(drain_seconds)
        logger.info(
            "stopping: drained in %.1f s%s",
            loop.time() - started,
            f", {left} connection(s) still open at the {drain_seconds:g} s limit" if left else "",
        )
        await running.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main())
