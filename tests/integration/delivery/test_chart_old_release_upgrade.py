"""Upgrading a release of the chart revision 3e06f5b as docs/install.md ("Upgrade") says, on a
cluster of its own.

That revision named the Triton PodMonitor `tritonPodMonitor` (podMonitors.triton now), and its
CRDs took any `triton.args`. This module starts a small kwok cluster without CRDs (the suite's
shared one has this repository's), installs that chart (checked in as a package: CRDs, templates
and values as released) with the old PodMonitor turned on, and then

* moves the PodMonitor to the new name with the command docs/install.md gives, read from it;
  the advice the docs gave before (`--set tritonPodMonitor=null`) is refused by the chart;
* creates a pool whose `triton.args` the new CRDs refuse, applies the new CRDs with the
  documented command and checks what the API server does with the pool (validation ratcheting,
  Kubernetes 1.30 and later).

The fixture was made once (helm v3.21.4), so that the test needs no git history (CI clones one
commit deep):
  git archive 3e06f5b charts/modelpool | tar -x -C /tmp/old
  helm package /tmp/old/charts/modelpool   # renamed to carry the commit
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster.kubetools import wait_for
from integration.cluster.test_modelpool_operator import pool_manifest
from integration.delivery.deliverytools import (
    CHART,
    REPO_ROOT,
    Obj,
    crds_where_missing,
    documents,
    helm,
    own_cluster,
)
from integration.delivery.test_chart_crd_upgrade import _documented_crd_upgrade
from integration.delivery.test_chart_values_fuzz import _monitor_crd
from modelpool.devcluster.cluster import DevCluster, checkout_name

pytestmark = pytest.mark.cluster

CLUSTER_NAME = checkout_name("modelpool-old-release-test", REPO_ROOT)  # another checkout's has its own
RELEASE, NAMESPACE = "modelpool", "modelpool-system"
OLD_CHART = Path(__file__).parent / "fixtures" / "modelpool-0.1.0-3e06f5b.tgz"
# The old release's PodMonitor values, as docs/install.md's example gives them.
OLD_MONITOR: dict[str, Any] = {
    "interval": "500ms",
    "namespaces": ["team-a"],
    "labels": {"release": "prometheus"},
}
OLD_SETS = [
    "--set",
    "tritonPodMonitor.enabled=true",
    "--set",
    f"tritonPodMonitor.interval={OLD_MONITOR['interval']}",
    "--set",
    f"tritonPodMonitor.namespaces={{{','.join(OLD_MONITOR['namespaces'])}}}",
    *(a for k, v in OLD_MONITOR["labels"].items() for a in ("--set", f"tritonPodMonitor.labels.{k}={v}")),
]
REFUSED = "tritonPodMonitor.enabled is true, but tritonPodMonitor is the old name of podMonitors.triton"
# What the API server says of a pool whose triton.args breaks the new CRDs' rule.
ARGS_INVALID = "spec.variants[0].triton.args: Invalid value"
ARGS_RULE = "triton.args may not set a flag ModelPool sets itself"


def documented_triton_monitor_migration() -> list[str]:
    """helm's arguments in docs/install.md's command that moves `tritonPodMonitor` to
    podMonitors.triton (the bash block of "Upgrade" that turns the old key off)."""
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    upgrade = text.split("## 5. Upgrade", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in upgrade.split("```bash")[1:]]
    [block] = [b for b in blocks if "tritonPodMonitor.enabled=false" in b]
    args = shlex.split(block.replace("\\\n", " "))
    assert args[:2] == ["helm", "upgrade"], args
    return [str(CHART) if a == "charts/modelpool" else a for a in args[1:]]


@pytest.fixture(scope="module")
def old_release() -> Iterator[DevCluster]:
    """A kwok control plane of this module's own, a stand-in of prometheus-operator's PodMonitor
    CRD, and the chart of 3e06f5b installed (its CRDs too) with the old PodMonitor turned on."""
    with (
        own_cluster(CLUSTER_NAME) as dev,
        crds_where_missing(dev, [_monitor_crd("PodMonitor", "podmonitors", "podMetricsEndpoints")]),
    ):
        args = ["install", RELEASE, str(OLD_CHART), "-n", NAMESPACE, "--create-namespace", *OLD_SETS]
        proc = helm(*args, cluster=dev)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield dev


def _pod_monitors(cluster: DevCluster) -> list[Obj]:
    proc = cluster.kubectl("get", "podmonitors", "-n", NAMESPACE, "-o", "json")
    items: list[Obj] = json.loads(proc.stdout)["items"]
    return items


def _scraped_as_before(monitor: Obj) -> None:
    """The Triton PodMonitor scrapes with the old release's values."""
    assert monitor["metadata"]["name"] == f"{RELEASE}-triton"
    labels = monitor["metadata"]["labels"]
    assert {k: labels.get(k) for k in OLD_MONITOR["labels"]} == OLD_MONITOR["labels"], labels
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/managed-by": "modelpool",
    }
    assert spec["namespaceSelector"] == {"matchNames": OLD_MONITOR["namespaces"]}
    [endpoint] = spec["podMetricsEndpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": OLD_MONITOR["interval"]}


def _upgrade(cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, *args, cluster=cluster)


def _revision(cluster: DevCluster) -> int:
    proc = helm("status", RELEASE, "-n", NAMESPACE, "-o", "json", cluster=cluster)
    assert proc.returncode == 0, proc.stderr
    revision: int = json.loads(proc.stdout)["version"]
    return revision


def test_the_documented_move_to_pod_monitors_triton_keeps_the_pod_monitor(old_release: DevCluster) -> None:
    cluster = old_release
    [before] = _pod_monitors(cluster)
    _scraped_as_before(before)  # what the old chart made

    # The advice docs/install.md and the chart's message gave before: the old release's values
    # are the chart's defaults under --reuse-values, so the null does not remove the old key, and
    # both turned on are refused. So is turning on the new one alone.
    for refused in (
        ["--set", "tritonPodMonitor=null", "--set", "podMonitors.triton.enabled=true"],
        ["--set", "podMonitors.triton.enabled=true"],
    ):
        proc = _upgrade(cluster, "--reuse-values", *refused)
        assert proc.returncode != 0, f"{refused}: {proc.stdout}"
        assert REFUSED in proc.stderr, proc.stderr
        # The message names the move that works, not the null.
        assert "--set tritonPodMonitor.enabled=false --set podMonitors.triton.enabled=true" in proc.stderr
        assert "tritonPodMonitor=null" not in proc.stderr
    assert _revision(cluster) == 1

    # --reset-then-reuse-values does remove it, with this chart's defaults for every value the
    # release never set: leader election turns on (docs/install.md says so).
    proc = _upgrade(
        cluster,
        "--reset-then-reuse-values",
        "--set",
        "tritonPodMonitor=null",
        "--set",
        "podMonitors.triton.enabled=true",
        "--dry-run=server",
    )
    assert proc.returncode == 0, proc.stderr
    rendered = documents(proc.stdout.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0])
    [deployment] = [o for o in rendered if o["kind"] == "Deployment"]
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    # The documented command, as docs/install.md gives it.
    args = documented_triton_monitor_migration()
    assert args[:2] == ["upgrade", RELEASE] and "--reuse-values" in args, args
    proc = helm(*args, cluster=cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _revision(cluster) == 2
    [after] = _pod_monitors(cluster)
    _scraped_as_before(after)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # updated in place, never missing
    assert after["spec"]["podTargetLabels"] == ["modelpool.dev/pool", "modelpool.dev/variant"]  # this chart's
    values = json.loads(helm("get", "values", RELEASE, "-n", NAMESPACE, "-o", "json", cluster=cluster).stdout)
    assert values["tritonPodMonitor"]["enabled"] is False
    assert values["podMonitors"]["triton"] == {"enabled": True, **OLD_MONITOR}

    # The move lasts: a later plain upgrade with --reuse-values keeps the one PodMonitor as it is.
    proc = _upgrade(cluster, "--reuse-values")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [again] = _pod_monitors(cluster)
    _scraped_as_before(again)


def _pool_with_old_args() -> Obj:
    pool = pool_manifest("old-args")
    pool["metadata"]["namespace"] = "default"
    pool["spec"]["variants"][0]["triton"] = {"args": ["--http-port=8000"]}
    return pool


def _args_patch(args: list[str]) -> str:
    return json.dumps([{"op": "replace", "path": "/spec/variants/0/triton/args", "value": args}])


def test_a_pool_the_new_crds_refuse_takes_changes_that_leave_the_field_as_it_is(
    old_release: DevCluster,
) -> None:
    # docs/install.md: on Kubernetes 1.30 and later (CRD validation ratcheting) the API server
    # accepts changes to such a pool that leave triton.args as it is, with a warning, and
    # refuses a change of triton.args that does not pass.
    cluster = old_release
    pool = _pool_with_old_args()
    cluster.kubectl("create", "-f", "-", input_text=json.dumps(pool))  # the old CRDs take it
    applied = cluster.kubectl(*_documented_crd_upgrade(), check=False)
    assert applied.returncode == 0, applied.stderr

    def new_rule_in_force() -> bool:  # the API server serves the new schema a moment later
        fresh = dict(pool, metadata={"name": "new-args", "namespace": "default"})
        proc = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-", input_text=json.dumps(fresh), check=False
        )
        return proc.returncode != 0 and ARGS_RULE in proc.stderr

    wait_for(new_rule_in_force, 30, "the new CRDs' triton.args rule to refuse a new pool")

    ref = ["modelpool", "old-args", "-n", "default"]
    for change in (
        ["label", *ref, "checked=yes"],
        ["patch", *ref, "--type=merge", "-p", '{"spec": {"gpuPool": {"gpuBudget": 6}}}'],
    ):
        proc = cluster.kubectl(*change, check=False)
        assert proc.returncode == 0, f"{change[0]}: {proc.stderr}"
        assert f"Warning: {ARGS_INVALID}" in proc.stderr and ARGS_RULE in proc.stderr, proc.stderr
    live = json.loads(cluster.kubectl("get", *ref, "-o", "json").stdout)
    assert live["metadata"]["labels"]["checked"] == "yes" and live["spec"]["gpuPool"]["gpuBudget"] == 6
    assert live["spec"]["variants"][0]["triton"]["args"] == ["--http-port=8000"]

    # A change of the field itself must pass.
    proc = cluster.kubectl("patch", *ref, "--type=json", "-p", _args_patch(["--grpc-port=9001"]), check=False)
    assert proc.returncode != 0, proc.stdout
    assert ARGS_INVALID in proc.stderr and ARGS_RULE in proc.stderr, proc.stderr
    proc = cluster.kubectl("patch", *ref, "--type=json", "-p", _args_patch(["--log-verbose=1"]), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
