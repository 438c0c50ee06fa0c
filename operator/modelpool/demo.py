"""`modelpool demo`: the product end to end on the embedded default cluster.

Starts (or reuses) the local kwok control plane with two fake 8-GPU nodes,
installs the CRDs, runs the operator as kopf runs it, applies every sample in
``manifests/samples`` and shows the pool converge, then deletes a child
Deployment by hand and shows the operator bring it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelpool.devcluster.cluster import DEFAULT_NAME, DevCluster
from modelpool.devcluster.processes import sigterm_interrupts, stop_process, without_caller_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "modelpool-demo"


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _wait_ready(cluster: DevCluster, pool: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        proc = cluster.kubectl("-n", NAMESPACE, "get", "modelpool", pool, "-o", "json", check=False)
        if proc.returncode == 0:
            last = json.loads(proc.stdout)
            conds = last.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                return last
        time.sleep(1)
    raise TimeoutError(f"modelpool {pool} not Ready after {timeout:.0f} s: {json.dumps(last.get('status'))}")


def operator_env(cluster: DevCluster) -> dict[str, str]:
    """The demo operator's environment: the cluster's, without the caller's operator settings (a
    ``MODELPOOL_PROMETHEUS_URL`` or ``MODELPOOL_METRICS_PORT`` meant for another operator), its
    metrics (if any) on loopback only."""
    return without_caller_settings(cluster.env()) | {
        "MODELPOOL_RESYNC_SECONDS": "10",
        "MODELPOOL_METRICS_ADDR": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }


def start_operator(cluster: DevCluster, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "modelpool", "operator", "run"],
            env=operator_env(cluster),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def run_demo(hold_seconds: float | None = None, cluster_name: str = DEFAULT_NAME) -> int:
    """The demo; a SIGTERM (as Ctrl-C) stops it and the operator it started."""
    with sigterm_interrupts():
        return _run_demo(hold_seconds, cluster_name)


def _run_demo(hold_seconds: float | None, cluster_name: str) -> int:
    cluster = DevCluster(name=cluster_name)
    _say("starting the local control plane (kwokctl --runtime binary, 2 fake nodes x 8 nvidia.com/gpu)")
    started = time.monotonic()
    cluster.create(nodes=2, gpus_per_node=8)
    print(f"control plane up in {time.monotonic() - started:.1f} s; KUBECONFIG={cluster.kubeconfig}")
    print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout)

    _say("installing the CRDs")
    print(cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds")).stdout)

    log_path = Path(os.environ.get("MODELPOOL_DEMO_LOG", "/tmp/modelpool-operator.log"))
    _say(f"running the operator (log: {log_path})")
    operator = start_operator(cluster, log_path)
    try:
        _say(f"applying manifests/samples in a fresh namespace {NAMESPACE}")
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=180)
        cluster.kubectl("create", "namespace", NAMESPACE)
        print(
            cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(REPO_ROOT / "manifests" / "samples")).stdout
        )
        pool = "banking77"
        t0 = time.monotonic()
        _wait_ready(cluster, pool, timeout=120)
        print(f"pool {pool} Ready {time.monotonic() - t0:.1f} s after apply")
        print(cluster.kubectl("-n", NAMESPACE, "get", "modelpools,routingpolicies").stdout)
        print(
            cluster.kubectl(
                *("-n", NAMESPACE, "get", "deployments,services,pods"),
                *("-l", f"modelpool.dev/pool={pool}", "-o", "wide"),
            ).stdout
        )

        _say(f"deleting deployment {pool}-large by hand: the operator recreates it")
        cluster.kubectl("-n", NAMESPACE, "delete", "deployment", f"{pool}-large", "--wait=false")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            proc = cluster.kubectl(
                "-n", NAMESPACE, "get", "deployment", f"{pool}-large", "-o", "json", check=False
            )
            if proc.returncode == 0 and not json.loads(proc.stdout)["metadata"].get("deletionTimestamp"):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"deployment {pool}-large was not recreated within 60 s")
        print(f"recreated after {time.monotonic() - t0:.1f} s")
        _wait_ready(cluster, pool, timeout=120)
        print(cluster.kubectl("-n", NAMESPACE, "get", "modelpool", pool, "-o", "wide").stdout)
        events = (
            "get",
            "events",
            "--sort-by=.lastTimestamp",
            "--field-selector",
            f"involvedObject.name={pool}",
        )
        print(cluster.kubectl("-n", NAMESPACE, *events).stdout)

        hold = hold_seconds if hold_seconds is not None else (float("inf") if sys.stdin.isatty() else 0.0)
        if hold > 0:
            _say(
                f"the operator keeps running; try `kubectl -n {NAMESPACE} edit modelpool banking77` "
                "(Ctrl-C stops it)"
            )
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            end = time.monotonic() + hold
            while time.monotonic() < end and operator.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_process(operator, grace=15)
    _say(
        f"done; the cluster keeps running (`modelpool devcluster down --name {cluster_name}` removes it). "
        f"KUBECONFIG={cluster.kubeconfig}"
    )
    return 0
