"""Two or more operator replicas with ``--leader-elect``: one leads (holds the Lease, reconciles),
the others wait as healthy standbys, and one takes over when the leader dies (SIGKILL: after the
lease duration), stops (SIGTERM: the lease is released, at once) or loses the lease (exit 1).

Real operator processes (``python -m modelpool operator run``) against the real local cluster.
The session's operator watches every namespace and would reconcile the pools here too: it is
paused while these tests run. The failover times measured are printed (``pytest -s``).
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from integration.cluster.kubetools import (
    answer,
    healthy,
    parse_metrics,
    service_account_kubeconfig,
    start_operator,
    total,
    wait_for,
)
from integration.delivery.deliverytools import can_i, helm, install_chart, uninstall_chart
from modelpool.builders.triton import LABEL_POOL
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.processes import kill_process, stop_process
from modelpool.devcluster.triton import free_port
from modelpool.leader import micro_time

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[3]
POOL = REPO_ROOT / "manifests" / "samples" / "modelpool-banking77.yaml"
LEASE_S, RETRY_S = 15, 2.0  # the operator's defaults (leader.py)
IDENTITY = re.compile(r"this replica \(([^)]+)\)")


@dataclass
class Replica:
    """One operator process with --leader-elect."""

    name: str
    log: Path
    healthz: str
    metrics: str
    proc: subprocess.Popen[bytes]
    identity: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def find_identity(self) -> str | None:
        match = IDENTITY.search(self.text())
        if match:
            self.identity = match.group(1)
        return self.identity or None

    def body(self) -> str | None:
        try:
            response = httpx.get(self.healthz, timeout=2)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def leading(self) -> float:
        """The replica's ``modelpool_leader`` gauge (its /metrics, served by standbys too)."""
        return total(parse_metrics(httpx.get(self.metrics, timeout=5).text), "modelpool_leader")


@dataclass
class Replicas:
    cluster: DevCluster
    tmp: Path
    lease_namespace: str
    watch_namespace: str
    lease_name: str
    kubeconfig: Path | None = None
    started: list[Replica] = field(default_factory=list)

    def start(self, name: str) -> Replica:
        log = self.tmp / f"operator-{name}.log"
        healthz = f"http://127.0.0.1:{free_port()}/healthz"
        metrics_port = free_port()
        env = {
            "KUBECONFIG": str(self.kubeconfig or self.cluster.kubeconfig),
            "MODELPOOL_RESYNC_SECONDS": "2",
            "MODELPOOL_METRICS_ADDR": "127.0.0.1",
        }
        args = [
            "--namespace",
            self.watch_namespace,
            "--liveness",
            healthz,
            "--metrics-port",
            str(metrics_port),
        ]
        args += ["--leader-elect"]
        args += ["--leader-election-namespace", self.lease_namespace, "--leader-election-id", self.lease_name]
        proc = start_operator(log, env, *args)
        replica = Replica(name, log, healthz, f"http://127.0.0.1:{metrics_port}/metrics", proc)
        self.started.append(replica)
        return replica

    def lease(self) -> dict[str, object] | None:
        proc = self.cluster.kubectl(
            "get", "lease", self.lease_name, "-n", self.lease_namespace, "-o", "json", check=False
        )
        if proc.returncode != 0:
            return None
        spec: dict[str, object] = json.loads(proc.stdout)["spec"]
        return spec

    def holder(self) -> str:
        spec = self.lease() or {}
        return str(spec.get("holderIdentity") or "")

    def leader_and_standby(self, a: Replica, b: Replica) -> tuple[Replica, Replica]:
        """Once one leads (kopf serves its liveness URL) and the other waits."""

        def settled() -> tuple[Replica, Replica] | None:
            holder = self.holder()
            for leader, standby in ((a, b), (b, a)):
                if holder and leader.find_identity() == holder and healthy(leader.healthz):
                    body = standby.body() or ""
                    if standby.find_identity() and body.startswith("starting: waiting for the leader lease"):
                        return leader, standby
            return None

        return wait_for(settled, 90, "one leader (kopf running) and one standby")

    def stop_all(self) -> None:
        for replica in self.started:
            stop_process(replica.proc, grace=20, group=True)

    def deployments(self) -> list[str]:
        return self.cluster.kubectl(
            "get", "deployments", "-n", self.watch_namespace, "-l", f"{LABEL_POOL}=banking77", "-o", "name"
        ).stdout.split()


@pytest.fixture
def replicas(cluster: DevCluster, tmp_path: Path, paused_session_operator: None) -> Iterator[Replicas]:
    namespace = f"le-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    made = Replicas(cluster, tmp_path, namespace, namespace, "modelpool-operator")
    yield made
    cluster.kubectl("delete", "modelpool", "banking77", "-n", namespace, "--wait=false", check=False)
    made.stop_all()
    for replica in made.started:
        print(f"--- {replica.name} ({replica.identity}) log tail ---\n{replica.text()[-2500:]}")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _no_tracebacks(*replicas: Replica) -> None:
    for replica in replicas:
        assert "Traceback" not in replica.text(), replica.text()[-4000:]


def test_one_leader_reconciles_and_the_standby_takes_over_when_it_is_killed(replicas: Replicas) -> None:
    a, b = replicas.start("a"), replicas.start("b")
    leader, standby = replicas.leader_and_standby(a, b)
    ns, name = replicas.lease_namespace, replicas.lease_name
    # The standby is healthy (200) and says whom it waits for.
    assert (
        standby.body() == f"starting: waiting for the leader lease {ns}/{name}, held by {leader.identity}\n"
    )
    assert leader.identity != standby.identity
    assert (replicas.lease() or {})["leaseDurationSeconds"] == LEASE_S
    # Both serve /metrics (no target down for a Prometheus that scrapes each pod); one leads.
    assert (leader.leading(), standby.leading()) == (1, 0)

    replicas.cluster.kubectl("apply", "-n", replicas.watch_namespace, "-f", str(POOL))
    wait_for(lambda: len(replicas.deployments()) == 3, 60, "the pool's 3 Deployments, written by the leader")
    time.sleep(2 * RETRY_S)  # a few more looks: the standby still waits, reconciles nothing
    assert standby.proc.poll() is None and (standby.body() or "").startswith("starting: waiting for")
    assert "run_pool" not in standby.text()  # kopf never ran there

    # The leader's node dies: no release, the lease runs out by the standby's clock.
    kill_process(leader.proc, group=True)
    killed = time.monotonic()
    child = replicas.deployments()[0]
    replicas.cluster.kubectl("delete", "-n", replicas.watch_namespace, child, "--wait=true")
    wait_for(lambda: replicas.holder() == standby.identity, LEASE_S + 15, "the standby holding the lease")
    took_over = time.monotonic() - killed
    wait_for(lambda: child in replicas.deployments(), 60, f"{child} recreated by the new leader")
    reconciled = time.monotonic() - killed
    print(
        f"\nfailover after SIGKILL of the leader: lease taken over after {took_over:.1f} s, "
        f"deleted child Deployment recreated after {reconciled:.1f} s "
        f"(lease {LEASE_S} s, retry {RETRY_S:g} s)"
    )
    # Not before the lease ran out since the standby last saw it renewed (at most a retry period
    # before the kill). How soon after is a figure (printed above); the wait's limit above only
    # catches a standby that never takes over.
    assert took_over >= LEASE_S - 2 * RETRY_S - 1, took_over
    assert (replicas.lease() or {})["leaseTransitions"] == 1
    wait_for(lambda: healthy(standby.healthz), 30, "kopf's liveness endpoint on the new leader")
    assert standby.leading() == 1

    # The restarted replica (as the kubelet would restart it) waits as the standby.
    restarted = replicas.start("a-restarted")
    body = wait_for(lambda: restarted.body(), 60, "the restarted replica's liveness URL")
    wait_for(
        lambda: (restarted.body() or "").endswith(f"held by {standby.identity}\n"),
        60,
        "the restarted replica waiting on the new leader",
    )
    assert body.startswith("starting: waiting for")
    _no_tracebacks(standby, restarted)
    infos = [line for line in standby.text().splitlines() if "leader lease" in line and "INFO" in line]
    assert len(infos) == 2, infos  # one line when it starts waiting, one when it leads
    assert "waiting for the leader lease" in infos[0] and f"held by {leader.identity}" in infos[0]
    assert f"leading: this replica ({standby.identity}) holds the leader lease" in infos[1]


def test_a_leader_stopped_with_sigterm_releases_the_lease_and_the_standby_leads_at_once(
    replicas: Replicas,
) -> None:
    a, b = replicas.start("a"), replicas.start("b")
    leader, standby = replicas.leader_and_standby(a, b)
    replicas.cluster.kubectl("apply", "-n", replicas.watch_namespace, "-f", str(POOL))
    wait_for(lambda: len(replicas.deployments()) == 3, 60, "the pool's 3 Deployments")

    leader.proc.send_signal(signal.SIGTERM)  # as the kubelet stops a container
    stopped = time.monotonic()
    code = leader.proc.wait(timeout=30)
    exited = time.monotonic() - stopped
    wait_for(lambda: replicas.holder() == standby.identity, 20, "the standby holding the lease")
    took_over = time.monotonic() - stopped
    print(
        f"\nhandover after SIGTERM of the leader: it stopped and released the lease in {exited:.1f} s, "
        f"the standby held it {took_over:.1f} s after the SIGTERM "
        f"({took_over - exited:.1f} s after the release)"
    )
    assert code == 0, leader.text()[-3000:]
    assert "released the leader lease" in leader.text()
    # Released: taken without waiting for the lease to run out. The leader renewed it at most a
    # retry period before the SIGTERM, so a standby that waited for it to run out would have
    # taken it LEASE_S - RETRY_S s after the SIGTERM or later. (How soon after the release it took
    # it is the figure printed above, not a check.)
    assert took_over < LEASE_S - RETRY_S, (exited, took_over)
    # And it reconciles: a deleted child comes back.
    child = replicas.deployments()[0]
    replicas.cluster.kubectl("delete", "-n", replicas.watch_namespace, child, "--wait=true")
    wait_for(lambda: child in replicas.deployments(), 60, f"{child} recreated by the new leader")
    _no_tracebacks(leader, standby)


def test_a_leader_whose_lease_is_taken_stops_at_once_with_one_error(replicas: Replicas) -> None:
    only = replicas.start("a")
    wait_for(lambda: only.find_identity() and replicas.holder() == only.identity, 60, "the replica leading")
    wait_for(lambda: healthy(only.healthz), 60, "kopf running")
    # Another writes itself into the lease (e.g. this replica was frozen past the lease duration).
    spec = {"holderIdentity": "thief", "renewTime": "2030-01-01T00:00:00.000000Z"}
    replicas.cluster.kubectl(
        "patch",
        "lease",
        replicas.lease_name,
        "-n",
        replicas.lease_namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
    )
    patched = time.monotonic()
    code = only.proc.wait(timeout=3 * RETRY_S + 5)
    print(f"\nthe leader stopped {time.monotonic() - patched:.1f} s after its lease was taken")
    assert code == 1, only.text()[-3000:]
    errors = [line for line in only.text().splitlines() if "ERROR" in line]
    assert len(errors) == 1, errors
    assert f"lost the leader lease {replicas.lease_namespace}/{replicas.lease_name}" in errors[0]
    assert "the lease is held by thief now" in errors[0]
    assert replicas.holder() == "thief"  # not written over
    _no_tracebacks(only)


def test_without_leader_election_nothing_waits_and_no_lease_is_written(replicas: Replicas) -> None:
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    log = replicas.tmp / "operator-plain.log"
    env = {"KUBECONFIG": str(replicas.cluster.kubeconfig)}
    proc = start_operator(log, env, "--namespace", replicas.watch_namespace, "--liveness", healthz)
    try:
        wait_for(lambda: healthy(healthz), 60, "kopf's liveness endpoint")
    finally:
        stop_process(proc, grace=20, group=True)
    assert (
        replicas.cluster.kubectl("get", "leases", "-n", replicas.lease_namespace, "-o", "name").stdout == ""
    )
    assert "leader lease" not in log.read_text()


def test_a_standby_is_ready_naming_the_leader_unready_without_the_api_server_and_running_once_it_leads(
    cluster: DevCluster, tmp_path: Path
) -> None:
    # A standby can take over: it is Ready (a rollout may count it as available), and says whom it
    # waits for. The leader here is a Lease another holder renewed a moment ago, for an hour.
    ns = f"le-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    now = micro_time(datetime.datetime.now(datetime.UTC))
    held = {
        "holderIdentity": "the-leader_0000",
        "leaseDurationSeconds": 3600,
        "acquireTime": now,
        "renewTime": now,
    }
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "modelpool-operator"},
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input_text=json.dumps({**lease, "spec": held}))
    healthz, readyz = (f"http://127.0.0.1:{free_port()}/{path}" for path in ("healthz", "readyz"))
    log = tmp_path / "operator-standby.log"
    args = ["--namespace", ns, "--liveness", healthz, "--readiness", readyz]
    args += ["--leader-elect", "--leader-election-namespace", ns]
    proc = start_operator(log, {"KUBECONFIG": str(cluster.kubeconfig)}, *args)
    try:
        standby = f"ready: standby, the leader lease {ns}/modelpool-operator is held by the-leader_0000\n"
        wait_for(lambda: answer(readyz) == (200, standby), 60, "readiness 200 as a standby")
        assert answer(healthz) == (
            200,
            f"starting: waiting for the leader lease {ns}/modelpool-operator, held by the-leader_0000\n",
        )
        # The API server goes away: the standby cannot read the lease, so it could not take over
        # either, and is not ready (but alive) until it reads the lease again.
        cluster.stop_component("kube-apiserver")
        try:
            unreadable = f"not ready: the leader lease {ns}/modelpool-operator cannot be read: "
            wait_for(
                lambda: ((a := answer(readyz)) and a[0] == 503 and a[1].startswith(unreadable)) or None,
                30,
                "readiness 503 while the lease cannot be read",
            )
            assert answer(healthz) == (
                200,
                f"starting: waiting for the leader lease {ns}/modelpool-operator\n",
            )
        finally:
            cluster.start_component("kube-apiserver")
            cluster.ensure_running()
        wait_for(lambda: answer(readyz) == (200, standby), 60, "readiness 200 as a standby again")
        # The leader releases the lease: this replica leads, and kopf runs.
        released = {"holderIdentity": "", "leaseDurationSeconds": 1}
        cluster.kubectl(
            "patch",
            "lease",
            "modelpool-operator",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": released}),
        )
        wait_for(lambda: answer(readyz) == (200, "ready: running\n"), 30, "readiness: running once it leads")
        assert healthy(healthz)
        assert proc.poll() is None
    finally:
        stop_process(proc, grace=20, group=True)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert "Traceback" not in log.read_text()


# --- the chart --------------------------------------------------------------------------------


def test_the_chart_runs_two_replicas_and_its_rbac_is_enough_for_the_lease(
    cluster: DevCluster, tmp_path: Path, paused_session_operator: None
) -> None:
    ns, team = (f"le-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (ns, team):
        cluster.kubectl("create", "namespace", name)
    release = f"modelpool-{ns}"
    made = Replicas(cluster, tmp_path, ns, team, release)
    cleanup: list[Callable[[], None]] = []
    try:
        refused = helm(
            "install",
            release,
            str(REPO_ROOT / "charts" / "modelpool"),
            "-n",
            ns,
            "--skip-crds",
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
            cluster=cluster,
        )
        assert refused.returncode != 0
        assert "replicaCount is 2 but leaderElection.enabled is false" in refused.stderr, refused.stderr

        install_chart(
            cluster,
            release,
            ns,
            "--skip-crds",
            "--set",
            "replicaCount=2",
            "--set-json",
            f'watchNamespaces=["{team}"]',
        )
        cleanup.append(
            lambda: uninstall_chart(
                cluster,
                release,
                ns,
                [f"clusterrole/{release}-{ns}-cluster", f"clusterrolebinding/{release}-{ns}-cluster"],
            )
        )
        deployment = json.loads(cluster.kubectl("get", "deployment", release, "-n", ns, "-o", "json").stdout)
        assert deployment["status"].get("availableReplicas") == 2  # (kwok's pods: nothing runs in them)
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--leader-elect" in args and f"--leader-election-id={release}" in args
        sa = f"{ns}:{release}"
        for verb in ("get", "create", "update"):
            assert can_i(cluster, sa, verb, "leases.coordination.k8s.io", ns)
            assert not can_i(cluster, sa, verb, "leases.coordination.k8s.io", team)

        # Two real operators as the chart's ServiceAccount (its RBAC only): one leads, the other waits.
        made.kubeconfig = service_account_kubeconfig(cluster, ns, release, tmp_path / "sa.yaml")
        a, b = made.start("a"), made.start("b")
        cleanup.append(made.stop_all)
        leader, standby = made.leader_and_standby(a, b)
        cluster.kubectl("apply", "-n", team, "-f", str(POOL))
        wait_for(lambda: len(made.deployments()) == 3, 60, "the pool's 3 Deployments")
        cluster.kubectl("delete", "modelpool", "banking77", "-n", team, "--timeout=60s")
        for replica in (leader, standby):
            assert "forbidden" not in replica.text().lower(), replica.text()[-3000:]
    finally:
        for step in reversed(cleanup):
            step()
        helm("uninstall", release, "-n", ns, "--ignore-not-found", cluster=cluster)
        for name in (ns, team):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
