"""Checks of the operator's flags, environment and API server before kopf starts: each mistake is
one line naming the flag or variable and the fix (the caller exits 2), not a traceback every 60 s."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable

import httpx

from modelpool.cli import port_number
from modelpool.controllers.backoff import report_due
from modelpool.controllers.handlers import METRICS_ADDR_ENV, METRICS_PORT_ENV
from modelpool.controllers.scaling_planner import EXTRA_MATCHERS_ENV, PROMETHEUS_URL_ENV
from modelpool.kube import Credentials

NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A namespace name (DNS-1123 label)."""
MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
MATCHERS = re.compile(rf"{MATCHER}(?:,{MATCHER})*")
"""PromQL label matchers without braces: ``namespace="prod",cluster=~"eu-.*"``."""
API_WAIT_MAX_S = 30.0

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


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL the operator can call, or None."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        return str(err)
    if parsed.scheme not in ("http", "https"):
        return "it needs http:// or https://"
    if not parsed.host:
        return "it has no host"
    return None


def config_problems(args: argparse.Namespace, environ: dict[str, str] | None = None) -> list[str]:
    """What is wrong with the operator's flags and environment, one sentence each naming the flag or
    variable and the fix; empty when nothing is. The Kubernetes login is checked separately."""
    env = dict(os.environ) if environ is None else environ
    problems: list[str] = []
    url = args.prometheus_url or env.get(PROMETHEUS_URL_ENV)
    if url:
        source = "--prometheus-url" if args.prometheus_url else f"${PROMETHEUS_URL_ENV}"
        if (why := _url_problem(url)) is not None:
            problems.append(
                f"{source}={url!r} is not a Prometheus URL ({why}): "
                "give http(s)://host[:port][/path], e.g. http://prometheus.monitoring:9090"
            )
    matchers = env.get(EXTRA_MATCHERS_ENV, "")
    if matchers and not MATCHERS.fullmatch(matchers):
        problems.append(
            f"${EXTRA_MATCHERS_ENV}={matchers!r} is not a list of PromQL label matchers: "
            'give label="value" pairs separated by commas, without braces, e.g. namespace="prod"'
        )
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
    if args.liveness:
        parts = urllib.parse.urlsplit(args.liveness)
        try:
            live_port = parts.port or 80
        except ValueError as err:
            problems.append(f"--liveness={args.liveness!r}: {err}: give e.g. http://0.0.0.0:8081/healthz")
        else:
            if parts.scheme != "http":
                problems.append(
                    f"--liveness={args.liveness!r} is not an http:// URL: give e.g. http://0.0.0.0:8081/healthz"
                )
            elif live_port == metrics_port:
                problems.append(
                    f"--liveness and --metrics-port both use port {live_port}: give them two ports"
                )
            elif (why := _bind_problem(parts.hostname or "localhost", live_port)) is not None:
                problems.append(
                    f"--liveness={args.liveness}: {why}: give a free port (liveness.port in the chart)"
                )
    return problems


def wait_for_api_server(
    credentials: Credentials, *, sleep: Callable[[float], None] = time.sleep, max_s: float = API_WAIT_MAX_S
) -> str | None:
    """Wait until the API server answers: None then, or why it never will (credentials refused).

    An API server that is not up yet (the operator started first, the control plane restarting) is
    waited for, logging one line at the 1st, 2nd, 4th... failed try; kopf would give up after about
    a minute with tracebacks, and the pod would crash-loop for something that resolves itself."""
    headers = {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}
    failures, delay = 0, 1.0
    with httpx.Client(
        base_url=credentials.server, verify=credentials.verify, headers=headers, timeout=10
    ) as http:
        while True:
            try:
                response = http.get("/api")
                if response.status_code == 401:
                    return (
                        f"the API server at {credentials.server} refused the operator's credentials "
                        "(401 Unauthorized): renew the token or client certificate in the kubeconfig, "
                        "or check the service account"
                    )
                if response.status_code < 500 and response.status_code != 429:
                    if failures:
                        logger.info(
                            "API server at %s answers after %d failed tries", credentials.server, failures
                        )
                    return None
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
            failures += 1
            if report_due(failures):
                logger.warning(
                    "API server at %s unreachable (%s); waiting for it, failed tries %d, next in %.0f s "
                    "(if it never comes: check the server in KUBECONFIG or the in-cluster service)",
                    credentials.server,
                    problem,
                    failures,
                    delay,
                )
            sleep(delay)
            delay = min(delay * 2, max_s)
