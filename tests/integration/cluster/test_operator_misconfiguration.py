"""A misconfigured operator says what is wrong in one line, and waits for what resolves itself.

Real processes against the real local cluster: a kubeconfig that does not exist (exit 2, one
line), an API server that is not up yet (one line per doubling wait, /healthz served meanwhile,
then it serves, no crash), a ServiceAccount without ``list pods`` (one line naming it, nothing
reconciled, then everything once it is granted), one that loses a permission while running (one
line naming it, no traceback each pass, the rest of the pool still reconciled) and a --namespace
that does not exist yet (one warning, its pools reconciled once it is created).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from integration.cluster.chart_rbac import drop_chart_rbac, grant_chart_rbac
from integration.cluster.kubetools import (
    answer,
    healthy,
    service_account_kubeconfig,
    start_operator,
    wait_for,
)
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.processes import stop_process
from modelpool.devcluster.triton import free_port

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[3]
POOL = REPO_ROOT / "manifests" / "samples" / "modelpool-banking77.yaml"


def test_a_missing_kubeconfig_is_one_line_and_exit_2(tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    missing = tmp_path / "no-such-kubeconfig"
    proc = start_operator(log, {"KUBECONFIG": str(missing)})
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(proc, grace=5, group=True)
    text = log.read_text()
    assert code == 2, f"exit code {code}; log:\n{text}"
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "KUBECONFIG" in errors[0] and str(missing) in errors[0], text


class Forwarder:
    """A TCP forwarder from 127.0.0.1:``port`` to ``target``: the API server, reachable late."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_an_api_server_not_up_yet_is_waited_for_in_few_lines(
    cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    # On a cluster just started the CRDs' storage may still answer 429 "(re)initializing", which
    # kopf logs as ERROR retries: the test is about the API server being away, not that.
    wait_for(
        lambda: (
            cluster.kubectl("get", "modelpools,routingpolicies", "-n", namespace, check=False).returncode == 0
        ),
        60,
        "the CRDs served",
    )
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    real = httpx.URL(config["clusters"][0]["cluster"]["server"])
    late = free_port()
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{late}"
    kubeconfig = tmp_path / "late-kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(config))
    log = tmp_path / "operator.log"
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    proc = start_operator(
        log, {"KUBECONFIG": str(kubeconfig)}, "--namespace", namespace, "--liveness", healthz
    )
    forwarder = None
    try:
        # While it waits, a pod's liveness probe must not restart it: /healthz answers.
        body = wait_for(lambda: _waiting_body(healthz), 20, "/healthz while the API server is away")
        assert f"waiting for the API server at https://127.0.0.1:{late}" in body, body
        time.sleep(6)  # tries at 0, 1, 3 s: three failures, two lines (1st, 2nd)
        assert _waiting_body(healthz) is not None, "/healthz stopped answering while it waits"
        assert proc.poll() is None, log.read_text()
        forwarder = Forwarder(late, (real.host, real.port or 443))
        wait_for(lambda: healthy(healthz), 30, "the operator's liveness endpoint once the API server is up")
        assert proc.poll() is None
    finally:
        stop_process(proc, grace=10, group=True)
        if forwarder is not None:
            forwarder.close()
    text = log.read_text()
    assert "Traceback" not in text, text
    # Until the test stops it: kopf may log a retry its own shutdown cut short after the SIGTERM.
    running = text.split("Signal SIGTERM is received")[0]
    waits = [line for line in running.splitlines() if f"127.0.0.1:{late}" in line]
    assert 1 <= len(waits) <= 3, text  # the 1st, 2nd (and 4th) failed tries; kopf never saw it down
    assert "unreachable" in waits[0] and "KUBECONFIG" in waits[0], waits[0]
    assert "ERROR" not in running, text


def _deployments(cluster: DevCluster, namespace: str) -> int:
    return len(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout.split())


def _waiting_body(url: str) -> str | None:
    """What the operator's liveness URL says while it waits before kopf starts, else None."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    ok = response.status_code == 200 and response.text.startswith("starting: waiting for")
    return response.text if ok else None


@contextlib.contextmanager
def _operator_as_chart_sa(
    cluster: DevCluster,
    namespace: str,
    tmp_path: Path,
    without: tuple[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[tuple[Path, str, subprocess.Popen[bytes]]]:
    """(log, healthz URL, process) of an operator watching ``namespace`` as ServiceAccount ``op`` with the
    chart's RBAC less ``without`` (and the flags ``extra``); it must stay up throughout. On exit the
    sample pool is deleted, the operator stopped and the RBAC's cluster-scoped part removed."""
    grant_chart_rbac(cluster, namespace, without=without)
    kubeconfig = service_account_kubeconfig(cluster, namespace, "op", tmp_path / "sa-kubeconfig.yaml")
    log = tmp_path / "operator.log"
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    env = {"KUBECONFIG": str(kubeconfig), "MODELPOOL_RESYNC_SECONDS": "1"}
    proc = start_operator(log, env, "--namespace", namespace, "--liveness", healthz, *extra)
    try:
        yield log, healthz, proc
        assert proc.poll() is None, log.read_text()
    finally:
        cluster.kubectl("delete", "modelpool", "banking77", "-n", namespace, "--wait=false", check=False)
        stop_process(proc, grace=10, group=True)
        drop_chart_rbac(cluster, namespace)


def test_a_missing_permission_is_named_without_a_traceback_each_pass(
    cluster: DevCluster, namespace: str, tmp_path: Path, paused_session_operator: None
) -> None:
    # The suite's operator (every namespace, full rights) would write the pool's status first, and
    # this one would then have nothing to patch: it pauses while this test runs.
    # With the permission missing at the start, the operator would wait for it (the preflight's
    # test below): here it is revoked once kopf runs, and the reconcile loop must say so.
    with _operator_as_chart_sa(cluster, namespace, tmp_path) as (log, healthz, _):
        wait_for(lambda: healthy(healthz), 60, "kopf's liveness endpoint")
        grant_chart_rbac(cluster, namespace, without=("patch", "modelpools/status"))
        cluster.kubectl("apply", "-n", namespace, "-f", str(POOL))
        wait_for(lambda: "modelpools/status" in log.read_text(), 30, "a log line naming modelpools/status")
        # The rest still works: the pool's Deployments are written (apply needs no status patch).
        wait_for(lambda: _deployments(cluster, namespace) == 3, 20, "the pool's 3 Deployments")
        time.sleep(6)  # about ten more failed passes at one per second
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    named = [line for line in text.splitlines() if "ERROR" in line and "modelpools/status" in line]
    assert 1 <= len(named) <= 5, named  # at the 1st, 2nd, 4th, 8th... failed pass
    assert "cannot patch" in named[0] and "permission" in named[0], named[0]


def test_a_missing_list_permission_is_named_and_waited_for_until_granted(
    cluster: DevCluster, namespace: str, tmp_path: Path, paused_session_operator: None
) -> None:
    # The suite's operator would reconcile the pool itself: it pauses while this test runs.
    cluster.kubectl("apply", "-n", namespace, "-f", str(POOL))
    without = ("list", "pods")
    with _operator_as_chart_sa(cluster, namespace, tmp_path, without=without) as (log, healthz, proc):
        wait_for(
            lambda: f"list pods in namespace {namespace}" in log.read_text(), 30, "an ERROR naming list pods"
        )
        body = wait_for(lambda: _waiting_body(healthz), 10, "/healthz while it waits for the permission")
        assert f"list pods in namespace {namespace}" in body, body
        time.sleep(4)  # the 2nd and 3rd checks: still missing, nothing reconciled
        assert _deployments(cluster, namespace) == 0
        assert proc.poll() is None, log.read_text()
        grant_chart_rbac(cluster, namespace)
        wait_for(lambda: _deployments(cluster, namespace) == 3, 60, "the pool's 3 Deployments once granted")
        assert healthy(healthz)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert 1 <= len(errors) <= 3, errors  # at the 1st, 2nd (and 4th) check
    for line in errors:
        assert f"list pods in namespace {namespace}" in line, line
        assert "grant it in the operator's Role/ClusterRole; the chart's rbac.yaml grants it" in line, line
    granted = [line for line in text.splitlines() if "permissions are granted after" in line]
    assert len(granted) == 1 and "INFO" in granted[0], granted


def test_readiness_is_503_naming_a_missing_permission_while_liveness_is_200_then_200_once_granted(
    cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    # A pod that waits for a permission must stay alive (liveness 200, no restart) but not be
    # Ready: a rolling update would otherwise terminate the old, working leader for it.
    readyz = f"http://127.0.0.1:{free_port()}/readyz"
    without = ("list", "pods")
    extra = ("--readiness", readyz)
    with _operator_as_chart_sa(cluster, namespace, tmp_path, without=without, extra=extra) as (
        log,
        healthz,
        _,
    ):
        waiting = f"waiting for permissions: list pods in namespace {namespace}"

        def naming_it() -> str | None:
            body = _waiting_body(healthz)
            return body if body is not None and waiting in body else None

        body = wait_for(naming_it, 30, "/healthz naming list pods")
        assert body == f"starting: {waiting}\n", body
        assert answer(readyz) == (503, f"not ready: {waiting}\n")
        time.sleep(3)  # the next checks: still missing, still not ready
        assert answer(readyz) == (503, f"not ready: {waiting}\n")
        grant_chart_rbac(cluster, namespace)
        wait_for(lambda: answer(readyz) == (200, "ready: running\n"), 60, "ready: running once granted")
        assert healthy(healthz)  # kopf's own liveness endpoint now
    assert "Traceback" not in log.read_text()


def test_a_namespace_that_does_not_exist_is_one_warning_and_served_once_created(
    cluster: DevCluster, tmp_path: Path, paused_session_operator: None
) -> None:
    absent = f"m-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "operator.log"
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    env = {"KUBECONFIG": str(cluster.kubeconfig), "MODELPOOL_RESYNC_SECONDS": "1"}
    proc = start_operator(log, env, "--namespace", absent, "--liveness", healthz)
    try:
        wait_for(lambda: healthy(healthz), 60, "kopf's liveness endpoint: the operator went on")
        cluster.kubectl("create", "namespace", absent)
        cluster.kubectl("apply", "-n", absent, "-f", str(POOL))
        wait_for(
            lambda: _deployments(cluster, absent) == 3, 60, "the pool's 3 Deployments in the new namespace"
        )
        assert proc.poll() is None
    finally:
        cluster.kubectl("delete", "modelpool", "banking77", "-n", absent, "--wait=false", check=False)
        stop_process(proc, grace=10, group=True)
        cluster.kubectl("delete", "namespace", absent, "--wait=false", check=False)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    warnings = [line for line in text.splitlines() if f"namespace {absent}" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings
    assert (
        f"namespace {absent} does not exist (yet): the operator watches it and reconciles its pools "
        "once it is created" in warnings[0]
    )
