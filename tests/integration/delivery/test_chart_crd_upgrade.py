"""Upgrading a Helm release as docs/install.md ("Upgrade") says, on a cluster of its own.

The suite's shared cluster has the CRDs before any test (tests/integration/conftest.py applies
crds/ with kubectl), so it cannot show what a Helm user meets: CRDs that `helm install` created,
owned by the field manager `helm`. This module starts a small kwok cluster of its own without
them, installs the chart's first version (checked in as a package: CRDs, templates and values as
released), and then upgrades as documented: the repository's crds/ with the documented command,
then `helm upgrade --reuse-values` to this chart (which renders its templates with the old chart's
values).
"""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.delivery.deliverytools import (
    CHART,
    REPO_ROOT,
    documents,
    helm,
    one,
    operator_container,
    own_cluster,
)
from modelpool.devcluster.cluster import DevCluster, checkout_name

pytestmark = pytest.mark.cluster

CLUSTER_NAME = checkout_name("modelpool-crd-upgrade-test", REPO_ROOT)  # another checkout's run has its own
RELEASE, NAMESPACE = "modelpool", "modelpool-system"
CRDS = ("modelpools.modelpool.dev", "routingpolicies.modelpool.dev")
# The chart as its first commit (f9fca8b) released it, packaged once, so that the test needs no git
# history (CI clones one commit deep):
#   git archive f9fca8b charts/modelpool | tar -x -C /tmp/first
#   helm package /tmp/first/charts/modelpool   # helm v3.21.4; renamed to carry the commit
FIRST_CHART = Path(__file__).parent / "fixtures" / "modelpool-0.1.0-f9fca8b.tgz"


@pytest.fixture(scope="module")
def fresh_cluster() -> Iterator[DevCluster]:
    """A kwok control plane of this module's own, with one fake node and no CRDs."""
    with own_cluster(CLUSTER_NAME) as dev:
        yield dev


def _first_chart() -> Path:
    """The chart as its first commit released it (CRDs, templates, values), packaged."""
    with tarfile.open(FIRST_CHART) as tar:
        names = tar.getnames()
        values = tar.extractfile("modelpool/values.yaml")
        assert values is not None
        text = values.read().decode()
    assert any(n.startswith("modelpool/crds/") for n in names) and not text.count("readiness:")
    return FIRST_CHART


def _documented_crd_upgrade() -> list[str]:
    """kubectl's arguments in docs/install.md's upgrade command for the CRDs."""
    text = (REPO_ROOT / "docs" / "install.md").read_text()
    upgrade = text.split("## 5. Upgrade", 1)[1]
    block = upgrade.split("```bash", 1)[1].split("```", 1)[0]
    [line] = [ln for ln in block.splitlines() if ln.startswith("kubectl apply")]
    args = shlex.split(line.split("#", 1)[0])[1:]
    return [str(REPO_ROOT / "crds") if a == "crds/" else a for a in args]


def _managers(cluster: DevCluster, crd: str) -> set[tuple[str, str]]:
    proc = cluster.kubectl("get", "crd", crd, "--show-managed-fields", "-o", "json")
    fields = json.loads(proc.stdout)["metadata"]["managedFields"]
    return {(f["manager"], f["operation"]) for f in fields}


def test_crds_created_by_helm_upgrade_with_the_documented_command_then_reuse_values(
    fresh_cluster: DevCluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    for crd in CRDS:
        assert cluster.kubectl("get", "crd", crd, check=False).returncode != 0, (
            f"{crd} exists before the install"
        )
    old_chart = _first_chart()
    proc = helm("install", RELEASE, str(old_chart), "-n", NAMESPACE, "--create-namespace", cluster=cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for crd in CRDS:
        assert ("helm", "Update") in _managers(cluster, crd), _managers(cluster, crd)

    # What the docs said before: a plain server-side apply of the new CRDs conflicts with Helm's
    # ownership of the fields it changes.
    plain = cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"), check=False)
    assert plain.returncode != 0, plain.stdout
    assert re.search(r'conflicts? with "helm"', plain.stderr) and ".spec.versions" in plain.stderr, (
        plain.stderr
    )

    # The documented command takes the fields over and upgrades both CRDs.
    args = _documented_crd_upgrade()
    assert "--server-side" in args and "--force-conflicts" in args, args
    applied = cluster.kubectl(*args, check=False)
    assert applied.returncode == 0, applied.stderr
    assert sorted(applied.stdout.split("\n")[:2]) == sorted(
        f"customresourcedefinition.apiextensions.k8s.io/{crd} serverside-applied" for crd in CRDS
    ), applied.stdout
    for crd in CRDS:
        live = cluster.kubectl("get", "crd", crd, "-o", "json").stdout
        assert ("kubectl", "Apply") in _managers(cluster, crd)
        wanted = (REPO_ROOT / "crds" / f"modelpool.dev_{crd.split('.')[0]}.yaml").read_text()
        # A description only the new CRDs carry is live now (the first one from the end of the file).
        marker = re.findall(r"description: ([A-Z][^'\n]{40,})", wanted)[-1][:40]
        assert marker in live, marker
    # Once the fields are kubectl's, a later change (a description, in a copy) needs no force.
    changed = tmp_path / "crds"
    changed.mkdir()
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        text = path.read_text()
        marker = re.findall(r"description: ([A-Z][^'\n]{40,})", text)[-1][:40]
        (changed / path.name).write_text(text.replace(marker, f"Changed. {marker}", 1))
    again = cluster.kubectl("apply", "--server-side", "-f", str(changed), check=False)
    assert again.returncode == 0, again.stderr
    assert "Changed. " in cluster.kubectl("get", "crd", CRDS[0], "-o", "json").stdout

    # `helm upgrade --reuse-values` from the first chart: its values.yaml lacks every key added
    # since (readiness, podMonitors, prometheusRule, leaderElection, podDisruptionBudget...).
    upgraded = helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", cluster=cluster)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "kubectl apply --server-side --force-conflicts -f crds/" in upgraded.stdout  # NOTES.txt
    manifest = helm("get", "manifest", RELEASE, "-n", NAMESPACE, cluster=cluster)
    assert manifest.returncode == 0, manifest.stderr
    objs = documents(manifest.stdout)
    args_ = operator_container(objs)["args"]
    assert "--readiness=http://0.0.0.0:8082/readyz" in args_
    assert not [a for a in args_ if a.startswith("--leader-elect")]  # stays as it was
    assert one(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert {o["kind"] for o in objs} & {"PrometheusRule", "PodMonitor", "PodDisruptionBudget"} == set()


def test_a_watched_namespace_that_does_not_exist_fails_the_install(fresh_cluster: DevCluster) -> None:
    # docs/install.md: each of watchNamespaces must exist before `helm install` (a Role and
    # RoleBinding go into each).
    proc = helm(
        "install",
        "absent-ns",
        str(CHART),
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--skip-crds",
        "--set",
        "watchNamespaces={team-absent}",
        cluster=fresh_cluster,
    )
    assert proc.returncode != 0, proc.stdout
    assert 'namespaces "team-absent" not found' in proc.stderr, proc.stderr
