"""The operator itself, run with nothing but the ServiceAccount token the chart creates.

`kubectl auth can-i` proves each rule; this proves the rules are enough for the real program:
kopf's startup scans, its watches, the reconcile loops' writes, status patches and Events all
go through the chart's namespaced RBAC without a single 403.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.cluster.kubetools import healthy, service_account_kubeconfig, start_operator, wait_for
from integration.delivery.deliverytools import REPO_ROOT, install_chart, uninstall_chart
from modelpool.builders.triton import LABEL_POOL
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.processes import stop_process
from modelpool.devcluster.triton import free_port

pytestmark = pytest.mark.cluster

SAMPLES = REPO_ROOT / "manifests" / "samples"
# Matches the weighted sample's routerSelector.
ROUTER_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "router-0",
        "labels": {
            "app.kubernetes.io/name": "modelpool-router",
            "modelpool.dev/policy": "banking77-weighted",
        },
    },
    "spec": {"containers": [{"name": "router", "image": "modelpool:fake"}]},
}
# A refused API call: the API server's reason (Forbidden / "... is forbidden") or kopf's words.
# Not a bare "403": timestamps (",403") and resourceVersions ('14036') contain it.
DENIED = re.compile(r"Forbidden|forbidden|Not enough permissions|status=403|HTTP/1\.1 403")


@pytest.fixture
def operator_as_chart_sa(
    cluster: DevCluster, namespaces: Callable[..., str], tmp_path: Path
) -> Iterator[tuple[str, Path, str]]:
    """(watched namespace, operator log, healthz URL) of an operator running as the chart's SA."""
    ns, team = namespaces(), namespaces()
    release = f"modelpool-{ns}"
    install_chart(cluster, release, ns, "--skip-crds", "--set-json", f'watchNamespaces=["{team}"]')
    kubeconfig = service_account_kubeconfig(cluster, ns, release, tmp_path / "sa-kubeconfig.yaml")
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    env = {"KUBECONFIG": str(kubeconfig), "MODELPOOL_RESYNC_SECONDS": "2"}
    proc = start_operator(log, env, "--namespace", team, "--liveness", healthz)
    try:
        yield team, log, healthz
    finally:
        stop_process(proc, grace=20, group=True)
        uninstall_chart(
            cluster,
            release,
            ns,
            [f"clusterrole/{release}-{ns}-cluster", f"clusterrolebinding/{release}-{ns}-cluster"],
        )


def _reason(cluster: DevCluster, kind: str, name: str, namespace: str, type_: str) -> str | None:
    obj = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    return next(
        (c["reason"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None
    )


def _conditions(cluster: DevCluster, kind: str, name: str, namespace: str) -> dict[str, str]:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return {}
    return {c["type"]: c["status"] for c in json.loads(proc.stdout).get("status", {}).get("conditions", [])}


def test_operator_runs_with_only_the_chart_rbac(
    cluster: DevCluster, operator_as_chart_sa: tuple[str, Path, str]
) -> None:
    team, log, healthz = operator_as_chart_sa
    wait_for(lambda: healthy(healthz), 60, "the operator's kopf liveness endpoint")

    cluster.kubectl("apply", "-n", team, "-f", str(SAMPLES / "modelpool-banking77.yaml"))
    cluster.kubectl("apply", "-n", team, "-f", str(SAMPLES / "routingpolicy-weighted.yaml"))
    # Children created (apps/deployments, services), status patched (modelpools/status).
    wait_for(
        lambda: (
            len(
                cluster.kubectl(
                    "get", "deployments", "-n", team, "-l", f"{LABEL_POOL}=banking77", "-o", "name"
                ).stdout.split()
            )
            == 3
        ),
        60,
        "the pool's 3 Deployments (small, int8, large)",
    )
    wait_for(
        lambda: _conditions(cluster, "modelpool", "banking77", team).get("Accepted") == "True",
        60,
        "ModelPool Accepted=True",
    )
    # The policy resolves the pool, writes the router ConfigMap, reads the admin-token Secret.
    wait_for(
        lambda: (
            _conditions(cluster, "routingpolicy", "banking77-weighted", team).get("ResolvedRefs") == "True"
        ),
        60,
        "RoutingPolicy ResolvedRefs=True",
    )
    # A router pod the policy selects makes the operator read the admin-token Secret (get
    # secrets). There is no such Secret, so it reports AdminTokenMissing and pushes nothing:
    # no traffic goes to the (kwok, fake) pod.
    cluster.kubectl("apply", "-n", team, "-f", "-", input_text=json.dumps(ROUTER_POD))
    wait_for(
        lambda: (
            _reason(cluster, "routingpolicy", "banking77-weighted", team, "Programmed") == "AdminTokenMissing"
        ),
        60,
        "RoutingPolicy Programmed=False/AdminTokenMissing",
    )
    events = json.loads(cluster.kubectl("get", "events", "-n", team, "-o", "json").stdout)["items"]
    assert any(e["involvedObject"]["name"] == "banking77" for e in events), "no Event posted on the pool"

    # Deleting the pool and the policy needs the operator to release its finalizer.
    cluster.kubectl("delete", "routingpolicy", "banking77-weighted", "-n", team, "--timeout=60s")
    cluster.kubectl("delete", "modelpool", "banking77", "-n", team, "--timeout=60s")
    assert healthy(healthz)

    text = log.read_text(errors="replace")
    # This process (not some other operator on the shared cluster) ran both loops, added and
    # removed the finalizers.
    for line in (
        "Daemon 'run_pool' is invoked",
        "Daemon 'run_policy' is invoked",
        "Adding the finalizer",
        "Removing the finalizer",
    ):
        assert line in text, f"{line!r} not in the operator log:\n{text[-3000:]}"
    denied = [line for line in text.splitlines() if DENIED.search(line)]
    assert not denied, "\n".join(denied[:20])
