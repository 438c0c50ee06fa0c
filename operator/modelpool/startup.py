"""Checks of the operator's flags, environment, API server and permissions before kopf starts: each
mistake is one line naming the flag or variable and the fix (the caller exits 2), not a traceback
every 60 s; what resolves itself (an API server not up yet, a permission not granted yet) is
waited for, with the liveness URL served meanwhile."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import prometheus_client

from modelpool import leader, permissions
from modelpool.cli import port_number
from modelpool.controllers.backoff import report_due
from modelpool.controllers.scaling_planner import (
    EXTRA_MATCHERS_ENV,
    GPU_POOL_SHARING_ENV,
    GPU_POOL_SHARING_MODES,
    PROMETHEUS_ALLOWED_URLS_ENV,
    PROMETHEUS_URL_ENV,
)
from modelpool.kubelogin import Credentials
from modelpool.leadership import LeaseApi, wait_to_lead
from modelpool.scaling.metrics import REGISTRY
from modelpool.scaling.prometheus_reader import allowed_urls_from, base_url_problem

NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A namespace name (DNS-1123 label)."""
MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
MATCHERS = re.compile(rf"{MATCHER}(?:,{MATCHER})*")
"""PromQL label matchers without braces: ``namespace="prod",cluster=~"eu-.*"``."""
API_WAIT_MAX_S = 30.0
METRICS_PORT_ENV = "MODELPOOL_METRICS_PORT"
METRICS_ADDR_ENV = "MODELPOOL_METRICS_ADDR"

logger = logging.getLogger("modelpool.operator")


def _bind_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on host:port (in use, no such address), or None."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        return f"cannot resolve {host!r}: {err}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(address)
        except OSError as err:
            return f"cannot listen on {host}:{port}: {err.strerror or err}"
    return None


def _endpoint_problem(
    flag: str, url: str, example: str, chart_value: str, taken: dict[str, int | None]
) -> tuple[int | None, str | None]:
    """The port of a URL the operator serves (``--liveness``, ``--readiness``), and what is wrong
    with it (None when nothing): not ``http://``, no port number, the port of another flag in
    ``taken``, or a port it cannot listen on."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError as err:
        return None, f"{flag}={url!r}: {err}: give e.g. {example}"
    if parts.scheme != "http":
        return port, f"{flag}={url!r} is not an http:// URL: give e.g. {example}"
    for other, other_port in taken.items():
        if port == other_port:
            return (
                port,
                f"{flag} and {other} both use port {port}: give them two ports ({chart_value} in the chart)",
            )
    if (why := _bind_problem(parts.hostname or "localhost", port)) is not None:
        return port, f"{flag}={url}: {why}: give a free port ({chart_value} in the chart)"
    return port, None


def config_problems(args: argparse.Namespace, environ: dict[str, str] | None = None) -> list[str]:
    """What is wrong with the operator's flags and environment, one sentence each naming the flag or
    variable and the fix; empty when nothing is. The Kubernetes login is checked separately."""
    env = dict(os.environ) if environ is None else environ
    problems: list[str] = []
    url = args.prometheus_url or env.get(PROMETHEUS_URL_ENV)
    if url:
        source = "--prometheus-url" if args.prometheus_url else f"${PROMETHEUS_URL_ENV}"
        if (why := base_url_problem(url)) is not None:
            problems.append(
                f"{source}={url!r} is not a Prometheus URL ({why}): "
                "give http(s)://host[:port][/path], e.g. http://prometheus.monitoring:9090"
            )
    # -- Prometheus allowlist --
    flag_urls = getattr(args, "prometheus_allowed_urls", None)
    allowed_source = "--prometheus-allowed-urls" if flag_urls else f"${PROMETHEUS_ALLOWED_URLS_ENV}"
    for allowed in allowed_urls_from(flag_urls or env.get(PROMETHEUS_ALLOWED_URLS_ENV, "")):
        if (why := base_url_problem(allowed)) is not None:
            problems.append(
                f"{allowed_source}: {allowed!r} is not a Prometheus base URL ({why}): give "
                "http(s)://host[:port][/path] entries separated by commas, e.g. "
                "http://prometheus.monitoring:9090 (prometheus.allowedURLs in the chart)"
            )
    # -- end of Prometheus allowlist --
    matchers = env.get(EXTRA_MATCHERS_ENV, "")
    if matchers and not MATCHERS.fullmatch(matchers):
        problems.append(
            f"${EXTRA_MATCHERS_ENV}={matchers!r} is not a list of PromQL label matchers: "
            'give label="value" pairs separated by commas, without braces, e.g. namespace="prod"'
        )
    # -- GPU pool sharing: the flag is checked by argparse, the variable here --
    sharing = env.get(GPU_POOL_SHARING_ENV)
    if not getattr(args, "gpu_pool_sharing", None) and sharing and sharing not in GPU_POOL_SHARING_MODES:
        problems.append(
            f"${GPU_POOL_SHARING_ENV}={sharing!r} is neither namespace nor cluster: give namespace (pools "
            "share a named GPU pool only within their namespace) or cluster (across namespaces)"
        )
    # -- end of GPU pool sharing --
    for namespace in args.namespace or ():
        if not NAMESPACE_NAME.fullmatch(namespace):
            problems.append(
                f"--namespace={namespace!r} is not a namespace name: lowercase letters, digits and "
                "'-', at most 63 characters (watchNamespaces in the chart)"
            )
    metrics_port: int | None = args.metrics_port
    metrics_addr = env.get(METRICS_ADDR_ENV, "0.0.0.0")
    if metrics_port is None and env.get(METRICS_PORT_ENV):
        try:
            metrics_port = port_number(env[METRICS_PORT_ENV])
        except argparse.ArgumentTypeError as err:
            problems.append(f"${METRICS_PORT_ENV}: {err}: give a free port, e.g. 8080")
    port_source = "--metrics-port" if args.metrics_port is not None else f"${METRICS_PORT_ENV}"
    if metrics_port is not None and (why := _bind_problem(metrics_addr, metrics_port)) is not None:
        problems.append(f"{port_source}={metrics_port}: {why}: give a free port (metrics.port in the chart)")
    live_port: int | None = None
    if args.liveness:
        live_port, why = _endpoint_problem(
            "--liveness",
            args.liveness,
            "http://0.0.0.0:8081/healthz",
            "liveness.port",
            {port_source: metrics_port},
        )
        if why is not None:
            problems.append(why)
    if args.readiness:
        _, why = _endpoint_problem(
            "--readiness",
            args.readiness,
            "http://0.0.0.0:8082/readyz",
            "readiness.port",
            {"--liveness": live_port, port_source: metrics_port},
        )
        if why is not None:
            problems.append(why)
    if getattr(args, "leader_elect", False):
        problems += _leader_election_problems(args, env)
    return problems


def _leader_election_problems(args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    problems: list[str] = []
    namespace = leader.lease_namespace(args.leader_election_namespace, env)
    if namespace is None:
        problems.append(
            "--leader-elect needs the namespace of its Lease, and this is not a pod (no "
            f"{leader.SA_NAMESPACE_FILE}) nor is ${leader.POD_NAMESPACE_ENV} set: give "
            "--leader-election-namespace=<the operator's namespace>"
        )
    elif not NAMESPACE_NAME.fullmatch(namespace):
        source = "--leader-election-namespace" if args.leader_election_namespace else "the pod's namespace"
        problems.append(f"{source}={namespace!r} is not a namespace name: lowercase letters, digits and '-'")
    name = args.leader_election_id
    if len(name) > 253 or not leader.DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            f"--leader-election-id={name!r} is not a Lease name: lowercase letters, digits, '-' and '.', "
            "at most 253 characters (default modelpool-operator)"
        )
    problems += lease_timing(args).problems()
    return problems


def lease_timing(args: argparse.Namespace) -> leader.Timing:
    """The leader election's durations from the flags."""
    return leader.Timing(
        lease_duration_s=args.leader_election_lease_duration,
        renew_deadline_s=args.leader_election_renew_deadline,
        retry_period_s=args.leader_election_retry_period,
    )


def lease_config(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> leader.LeaseConfig | None:
    """The Lease this replica competes for, with ``--leader-elect`` (else None); the flags are
    checked by :func:`config_problems` first."""
    if not getattr(args, "leader_elect", False):
        return None
    namespace = leader.lease_namespace(args.leader_election_namespace, environ)
    assert namespace is not None, "config_problems names a missing namespace"
    return leader.LeaseConfig(namespace, args.leader_election_id, leader.new_identity(), lease_timing(args))


def serve_metrics(port_flag: int | None, environ: dict[str, str] | None = None) -> None:
    """Serve the operator's own /metrics (``--metrics-port``, else ``$MODELPOOL_METRICS_PORT``) from
    now on, before kopf starts: a replica that waits (for the API server, a permission or, as a
    standby, the leader lease) answers too, so a Prometheus that scrapes every operator pod sees no
    target down. :func:`config_problems` has checked the port."""
    env = dict(os.environ) if environ is None else environ
    port = port_flag or env.get(METRICS_PORT_ENV)
    if port:
        prometheus_client.start_http_server(
            int(port), addr=env.get(METRICS_ADDR_ENV, "0.0.0.0"), registry=REGISTRY
        )


def api_client(credentials: Credentials, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A blocking client of the API server for the checks before kopf starts (kopf has its own)."""
    return httpx.Client(
        base_url=credentials.server,
        verify=credentials.verify,
        auth=credentials.auth(),
        proxy=credentials.proxy,
        timeout=10,
        transport=transport,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class ProbeEndpoint:
    """One URL the operator serves itself, ``http://host:port/path`` as kopf reads ``--liveness``: a
    small stdlib HTTP server in a daemon thread that answers each GET of that path with what
    ``answer`` says at that moment (an HTTP status and one line of text), and 404 elsewhere. The
    liveness URL while the operator waits before kopf starts (:class:`WaitingLiveness`) and the
    readiness URL (:class:`Readiness`) are two of these."""

    def __init__(self, flag: str, url: str, answer: Callable[[], tuple[int, str]]) -> None:
        self.flag = flag
        self.url = url
        self.answer = answer
        self._server: _Server | None = None

    def start(self) -> bool:
        """Serve from now on; False, with one WARNING line, when the port cannot be had (it was
        free when :func:`config_problems` looked)."""
        parts = urllib.parse.urlsplit(self.url)
        host, port, path = parts.hostname or "localhost", parts.port or 80, parts.path or "/"  # as kopf
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urllib.parse.urlsplit(self.path).path != path:
                    self.send_error(404)
                    return
                status, line = endpoint.answer()
                body = f"{line}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a probe every few seconds is not news

        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            server_class = _Server6 if infos[0][0] == socket.AF_INET6 else _Server
            server = server_class((host, port), Handler)
        except OSError as err:
            logger.warning("cannot serve %s=%s: %s", self.flag, self.url, err)
            return False
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"serve{self.flag.removeprefix('-')}",
            daemon=True,
        )
        thread.start()
        self._server = server
        return True

    def close(self) -> None:
        """Stop serving: the port is free again on return."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class WaitingLiveness:
    """The ``--liveness`` URL, served while the operator waits before kopf starts (kopf serves it
    once it runs): 200 and a line saying what the operator waits for. Without it a pod's liveness
    probe fails while the operator waits for the API server or a permission, and the kubelet
    restarts the container: the crash loop the wait avoids. The port is free again on exit."""

    def __init__(self, url: str | None, waiting_for: str) -> None:
        self.url = url
        self.waiting_for = waiting_for
        """What the first answer says: set before the server starts, so no probe sees less."""
        self._endpoint: ProbeEndpoint | None = None

    def __enter__(self) -> WaitingLiveness:
        if self.url:
            endpoint = ProbeEndpoint("--liveness", self.url, self._answer)
            self._endpoint = endpoint if endpoint.start() else None
        return self

    def __exit__(self, *_: object) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def say(self, waiting_for: str) -> None:
        """What the operator waits for now, as the body of the next answer says."""
        self.waiting_for = waiting_for

    def _answer(self) -> tuple[int, str]:
        return 200, f"starting: waiting for {self.waiting_for}"


READY, NOT_READY = 200, 503
STARTING_KOPF = "starting kopf"


class Readiness:
    """The ``--readiness`` URL: whether this replica can do its job, reconcile now or take over as a
    standby, served by the operator itself from before its first wait until the process ends.

    - ``503 not ready: waiting for <what>`` while it waits for what it cannot work without: the API
      server, an essential permission (:func:`preflight`);
    - ``200 ready: standby, the leader lease <ns>/<name> is held by <identity>`` for a standby whose
      checks passed: it takes over when the leader stops;
    - ``503 not ready: the leader lease <ns>/<name> cannot be read: <error>`` for a standby whose last
      read of the lease failed (the API server away from it): it could not take over either;
    - ``200 ready: starting kopf``, then ``200 ready: running`` once kopf has started (its
      ``ready_flag``);
    - ``503 not ready: kopf stopped`` in the moment between kopf's return (SIGTERM, a crash) and the
      end of the process; after it, nothing answers.

    The liveness URL answers 200 throughout the waits (the kubelet must not restart a pod that
    waits); this one does not, so a rollout (maxSurge 1, maxUnavailable 0) does not count a new pod
    that waits for a permission as available and terminate the old, working leader. Without a URL
    nothing is served and :attr:`answer` still says what it would answer."""

    def __init__(self, url: str | None, waiting_for: str) -> None:
        self.url = url
        self._state: tuple[int, str] = (NOT_READY, f"not ready: waiting for {waiting_for}")
        """What the first answer says: set before the server starts, so no probe sees less."""
        self._kopf: threading.Event | None = None
        self._endpoint: ProbeEndpoint | None = None

    def serve(self) -> Readiness:
        """Serve the URL (when there is one) from now on, for the process's whole life."""
        if self.url and self._endpoint is None:
            endpoint = ProbeEndpoint("--readiness", self.url, lambda: self.answer)
            self._endpoint = endpoint if endpoint.start() else None
        return self

    def close(self) -> None:
        """Stop serving (tests; the operator serves until it exits)."""
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def __enter__(self) -> Readiness:
        return self.serve()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def answer(self) -> tuple[int, str]:
        """The HTTP status and the line the URL answers now."""
        kopf = self._kopf
        if kopf is not None:
            return READY, "ready: running" if kopf.is_set() else f"ready: {STARTING_KOPF}"
        return self._state

    def not_ready(self, why: str) -> None:
        self._kopf, self._state = None, (NOT_READY, f"not ready: {why}")

    def ready(self, what: str) -> None:
        self._kopf, self._state = None, (READY, f"ready: {what}")

    def running(self, kopf_ready: threading.Event) -> None:
        """kopf starts: ``ready: running`` once it sets ``kopf_ready`` (kopf.run's ready_flag)."""
        self._kopf = kopf_ready


def wait_for_api_server(
    http: httpx.Client, *, sleep: Callable[[float], None] = time.sleep, max_s: float = API_WAIT_MAX_S
) -> str | None:
    """Wait until the API server answers: None then, or why it never will (credentials refused).

    An API server that is not up yet (the operator started first, the control plane restarting) is
    waited for, logging one line at the 1st, 2nd, 4th... failed try; kopf would give up after about
    a minute with tracebacks, and the pod would crash-loop for something that resolves itself."""
    server = str(http.base_url).rstrip("/")
    failures, delay = 0, 1.0
    while True:
        try:
            response = http.get("/api")
            if response.status_code == 401:
                return (
                    f"the API server at {server} refused the operator's credentials "
                    "(401 Unauthorized): renew the token or client certificate in the kubeconfig, "
                    "or check the service account"
                )
            if response.status_code < 500 and response.status_code != 429:
                if failures:
                    logger.info("API server at %s answers after %d failed tries", server, failures)
                return None
            problem = f"HTTP {response.status_code}"
        except httpx.TransportError as err:
            problem = f"{type(err).__name__}: {err}"
        failures += 1
        if report_due(failures):
            logger.warning(
                "API server at %s unreachable (%s); waiting for it, failed tries %d, next in %.0f s "
                "(if it never comes: check the server in KUBECONFIG or the in-cluster service)",
                server,
                problem,
                failures,
                delay,
            )
        sleep(delay)
        delay = min(delay * 2, max_s)


def _namespace_exists(http: httpx.Client, name: str) -> bool | None:
    """Whether the namespace exists; None when the operator may not tell."""
    try:
        response = http.get(f"/api/v1/namespaces/{name}")
        if response.status_code == 403:  # a namespaced install: the chart grants list, not get
            response = http.get("/api/v1/namespaces", params={"fieldSelector": f"metadata.name={name}"})
            return bool(response.json().get("items")) if response.status_code == 200 else None
    except (httpx.TransportError, ValueError, AttributeError):
        return None
    return {200: True, 404: False}.get(response.status_code)


def absent_namespaces(http: httpx.Client, namespaces: Sequence[str]) -> set[str]:
    """The ``--namespace`` values that name no namespace, each logged as one WARNING line (not an
    error: kopf serves a namespace created later)."""
    absent = set()
    for name in namespaces:
        if _namespace_exists(http, name) is False:
            logger.warning(
                "namespace %s does not exist (yet): the operator watches it and reconciles its pools "
                "once it is created",
                name,
            )
            absent.add(name)
    return absent


def _grant_hint(what: str) -> str:
    return f"grant {what} in the operator's Role/ClusterRole; the chart's rbac.yaml grants {what}"


def wait_for_permissions(
    http: httpx.Client,
    namespaces: Sequence[str] | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_s: float = API_WAIT_MAX_S,
    report: Callable[[str], None] = lambda _: None,
    lease_namespace: str | None = None,
) -> None:
    """Wait until the operator may do what reconciling needs (:data:`permissions.RULES`), cluster-wide
    (``namespaces`` None) or in each namespace, and with leader election what the Lease needs in
    ``lease_namespace``.

    kopf started without ``list`` or ``watch`` on a resource it indexes waits for that index and
    reconciles nothing, saying little; here one ERROR line names every missing permission and the
    fix, at the 1st, 2nd, 4th... check, and once they are granted kopf starts. Missing permissions
    the operator can do without are one WARNING line. The check itself never stops the start: an
    API server that does not answer SelfSubjectAccessReviews is one WARNING line."""
    wanted = permissions.accesses(namespaces, lease_namespace=lease_namespace)
    checks, delay = 0, 1.0
    while True:
        try:
            missing = permissions.denied(http, wanted, sleep)
        except permissions.ReviewUnavailable as err:
            logger.warning(
                "cannot check the operator's permissions with a SelfSubjectAccessReview (%s): starting "
                "without the check",
                err,
            )
            return
        checks += 1
        blocking = [access for access in missing if access.rule.essential]
        if not blocking:
            break
        names = ", ".join(map(str, blocking))
        report(f"permissions: {names}")
        if report_due(checks):
            them = "them" if len(blocking) > 1 else "it"
            logger.error(
                "missing permission%s: %s; the operator reconciles nothing without %s and waits "
                "(checks %d, next in %.0f s): %s",
                "s" if len(blocking) > 1 else "",
                names,
                them,
                checks,
                delay,
                _grant_hint(them),
            )
        wanted = missing  # what was granted stays granted: ask again only for the rest
        sleep(delay)
        delay = min(delay * 2, max_s)
    if checks > 1:
        logger.info("the operator's permissions are granted after %d checks; starting", checks)
    if missing:
        them = "them" if len(missing) > 1 else "it"
        logger.warning(
            "missing permission%s: %s; the operator starts without %s: %s",
            "s" if len(missing) > 1 else "",
            ", ".join(f"{access} ({access.rule.why})" for access in missing),
            them,
            _grant_hint(them),
        )


def preflight(
    credentials: Credentials,
    namespaces: Sequence[str] | None,
    liveness: str | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
    elector: leader.Elector | None = None,
    clock: Callable[[], float] = time.monotonic,
    readiness: Readiness | None = None,
) -> str | None:
    """What needs the API server before kopf starts: wait for it, say which ``namespaces`` do not
    exist, wait for the permissions (cluster-wide when ``namespaces`` is None), and with leader
    election (``elector``) wait until this replica holds the leader lease. None when kopf may
    start, else why it never can (the caller exits 2). The ``liveness`` URL is served meanwhile
    (a standby answers 200 while it waits) and its port is free again on return, for kopf.
    ``readiness`` (served by the caller) says ``not ready`` while the API server or a permission is
    waited for, ``ready`` once the permissions are granted: a standby can take over."""
    ready = readiness if readiness is not None else Readiness(None, "")
    live = WaitingLiveness(liveness, f"the API server at {credentials.server}")

    def waiting(what: str) -> None:
        live.say(what)
        ready.not_ready(f"waiting for {what}")

    waiting(live.waiting_for)
    with live, api_client(credentials, transport=transport) as http:
        refused = wait_for_api_server(http, sleep=sleep)
        if refused is not None:
            return refused
        absent = absent_namespaces(http, namespaces or ())
        waiting("the operator's permissions")
        present = None if namespaces is None else [ns for ns in namespaces if ns not in absent]
        lease_namespace = elector.config.namespace if elector is not None else None
        wait_for_permissions(http, present, sleep=sleep, report=waiting, lease_namespace=lease_namespace)
        if elector is not None:
            lease = elector.config

            def standby(waiting_for: str) -> None:
                live.say(waiting_for)
                holder = elector.holder
                ready.ready(
                    f"standby, the leader lease {lease} is held by {holder}"
                    if holder
                    else f"standby, reading the leader lease {lease}"
                )

            def unreadable(why: str) -> None:
                live.say(f"the leader lease {lease}")  # alive: it waits, and reads again
                ready.not_ready(why)

            standby(f"the leader lease {lease}")
            wait_to_lead(
                LeaseApi(http, lease), elector, say=standby, unreadable=unreadable, sleep=sleep, clock=clock
            )
        ready.ready(STARTING_KOPF)
    return None
