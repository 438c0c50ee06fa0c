"""ModelPoolRouterConnectionsNearCap and ModelPoolRouterRefusingConnections on the real parts: real
routers (``python -m modelpool.routing serve``), one of them with ``--max-connections 3``, scraped by
a real Prometheus (test_alerts' Prometheus: Debian's ``/usr/bin/prometheus`` on 127.0.0.1, 1 s
scrapes and evaluations) that evaluates the rules of charts/modelpool/files/alerts/prometheusrule.yaml
with every ``for:`` shortened to 10 s. The routers are scraped as the chart's router PodMonitor
scrapes their pods: the target labels ``namespace`` and ``pod`` (static labels here) next to the
routers' own ``pool`` and ``policy``. No operator and no cluster: these rules read the routers alone.

The capped router holds Prometheus' kept-alive scrape connection; the test holds the two others its
cap allows, so the near-cap alert fires for it (3 of 3 open) while nothing is refused, and the
refusals alert does not. Then each new connection is answered 503, and the refusals alert fires for
it, with reason ``max_connections``. The other router (the default cap, 4,096) alerts neither time.
Everything listens on, and is reached at, 127.0.0.1 only.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from integration.cluster.kubetools import parse_metrics, wait_for
from integration.cluster.test_alerts import RULES, Obj, Prometheus
from modelpool.devcluster.triton import free_port
from modelpool.routing.config import parse_config
from modelpool.routing.process import RouterProcess
from unit.routing.routertools import router_config, tier_variant

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(300)]

NAMESPACE = "team-a"  # the namespace label a PodMonitor would give the router pods
POOL = "intents"
CAP = 3
"""The capped router's ``--max-connections``."""
REFUSING = "ModelPoolRouterRefusingConnections"
NEAR_CAP = "ModelPoolRouterConnectionsNearCap"
WAIT_S = 60.0
"""How long to wait at most for an alert (not a speed: with ``for:`` at 10 s a passing run takes
far less)."""
RULES_FILE = RULES  # the chart's rules; point at a broken copy to see the test fail
READY = b"GET /v2/health/ready HTTP/1.1\r\nhost: router\r\n\r\n"
METRICS = b"GET /metrics HTTP/1.1\r\nhost: router\r\n\r\n"


class CappedRouter(RouterProcess):
    """A router serving at most :data:`CAP` client connections at once."""

    def command(self) -> list[str]:
        return [*super().command(), "--max-connections", str(CAP)]


def start_router(stack: ExitStack, policy: str, capped: bool) -> RouterProcess:
    """A router of pool :data:`POOL` programmed by ``policy`` (as the operator's push names them),
    with one variant at a 127.0.0.1 port nothing listens on: no request here is routed."""
    variant = tier_variant("small", "small", [f"http://127.0.0.1:{free_port()}"])
    config = parse_config(router_config("weighted", variant, pool=POOL, policy=policy))
    router = (CappedRouter if capped else RouterProcess)(config).start()
    stack.callback(router.stop)
    return router


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP answer read from ``sock``: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the router closed the connection before its answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        assert chunk, f"the router closed the connection in its answer: {head!r}"
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def connect(router: RouterProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", router.port), timeout=10)


def hold(stack: ExitStack, router: RouterProcess) -> socket.socket | None:
    """A kept-alive connection to ``router`` that it serves, left open until the test ends; None
    where the router answered 503 (it was at its cap then)."""
    sock = connect(router)
    sock.sendall(READY)
    status, _ = answer(sock)
    if status != 200:
        sock.close()
        return None
    stack.callback(sock.close)
    return sock


def refused(router: RouterProcess) -> bool:
    """Whether a new connection to ``router`` is answered 503 and closed."""
    with closing(connect(router)) as sock:
        sock.sendall(READY)
        status, _ = answer(sock)
    return status == 503


def alerts(prom: Prometheus, name: str, pod: str) -> list[Obj]:
    return [a for a in prom.alerts(name, NAMESPACE) if a["labels"].get("pod") == pod]


def firing(prom: Prometheus, name: str, pod: str) -> Obj | None:
    return next((a for a in alerts(prom, name, pod) if a["state"] == "firing"), None)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_a_router_at_its_cap_fires_near_cap_then_refusing_connections_and_another_neither(
    stack: ExitStack, tmp_path: Path
) -> None:
    routers = {
        "capped": start_router(stack, "busy", capped=True),
        "roomy": start_router(stack, "calm", False),
    }
    instances = {pod: r.url.removeprefix("http://") for pod, r in routers.items()}
    router_job = {
        "job_name": "modelpool-router",
        "static_configs": [
            {"targets": [instance], "labels": {"namespace": NAMESPACE, "pod": pod}}
            for pod, instance in instances.items()
        ],
    }
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prom = Prometheus(folder, [], [router_job], rules=RULES_FILE)
    stack.callback(prom.stop)
    wait_for(lambda: prom.targets_up("modelpool-router"), 30, "the routers scraped")

    capped = routers["capped"]
    # Prometheus keeps its scrape connection open: the test takes the rest of the cap.
    held = [
        wait_for(lambda: hold(stack, capped), 30, "a connection the capped router serves")
        for _ in range(CAP - 1)
    ]

    near = wait_for(
        lambda: firing(prom, NEAR_CAP, "capped"), WAIT_S, f"{NEAR_CAP} firing for the capped router"
    )
    assert near["labels"] == {
        "alertname": NEAR_CAP,
        "severity": "warning",
        "namespace": NAMESPACE,
        "pod": "capped",
        "instance": instances["capped"],
        "pool": POOL,
        "policy": "busy",
    }
    assert float(near["value"]) == 1.0  # 3 of 3
    assert (
        f"Router pod {NAMESPACE}/capped ({instances['capped']}) of pool {POOL} has had 100%"
        in (near["annotations"]["summary"])
    )
    assert near["annotations"]["runbook_url"].endswith("docs/install.md#modelpoolrouterconnectionsnearcap")
    # Nothing has been refused yet, so the refusals alert is not even pending.
    refusals = prom.value('sum(modelpool_router_client_connections_refused_total{pod="capped"})')
    assert [float(s["value"][1]) for s in refusals] == [0.0]
    assert alerts(prom, REFUSING, "capped") == []

    # Now every new connection is over the cap: answered 503 and closed, until the alert fires.
    answered_503 = 0

    def refusing_alert() -> Obj | None:
        nonlocal answered_503
        answered_503 += refused(capped)
        return firing(prom, REFUSING, "capped")

    alert = wait_for(refusing_alert, WAIT_S, f"{REFUSING} firing for the capped router")
    assert answered_503 > 0
    assert alert["labels"] == {
        "alertname": REFUSING,
        "severity": "warning",
        "namespace": NAMESPACE,
        "pod": "capped",
        "instance": instances["capped"],
        "pool": POOL,
        "policy": "busy",
        "reason": "max_connections",
    }
    summary = alert["annotations"]["summary"]
    assert f"Router pod {NAMESPACE}/capped ({instances['capped']}) of pool {POOL}" in summary
    assert "(max_connections)" in summary
    assert 'refused_total{reason="max_connections"}' in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("docs/install.md#modelpoolrouterrefusingconnections")
    # Only the one reason: nothing ran out of file descriptors.
    assert [a["labels"]["reason"] for a in alerts(prom, REFUSING, "capped")] == ["max_connections"]

    # The router counted each 503 it gave (asked on a connection it serves: a new one is refused).
    held[0].sendall(METRICS)
    status, body = answer(held[0])
    assert status == 200
    counted = {
        labels["reason"]: value
        for name, labels, value in parse_metrics(body.decode())
        if name == "modelpool_router_client_connections_refused_total"
    }
    assert counted == {"max_connections": answered_503, "out_of_files": 0}

    # The router with room, scraped all along, has neither alert, not even pending.
    assert alerts(prom, NEAR_CAP, "roomy") == []
    assert alerts(prom, REFUSING, "roomy") == []
