"""The kustomize base and overlays: render, match the chart, and pass the real API server."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from integration.delivery.deliverytools import (
    MANIFESTS,
    REPO_ROOT,
    Obj,
    by_kind,
    kustomize,
    one,
    operator_container,
    render,
    without_helm_labels,
)
from modelpool.devcluster.cluster import DevCluster

pytestmark = pytest.mark.cluster

BASE = MANIFESTS / "base"
OVERLAYS = MANIFESTS / "overlays"
IMAGE = "ghcr.io/modelpool/modelpool"
CRDS_KUSTOMIZATION = REPO_ROOT / "crds" / "Kustomization"


@pytest.fixture(scope="module", autouse=True)
def _crds_are_a_kustomization() -> None:
    # kustomize loads files only from folders with a kustomization of their own; the file is
    # extensionless so that `kubectl apply -f crds/` skips it.
    assert CRDS_KUSTOMIZATION.is_file(), (
        f"{CRDS_KUSTOMIZATION} is missing: manifests/base takes the CRDs from ../../crds, which "
        "needs a kustomization listing the CRD files (see docs/install.md)"
    )


def _by_name(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_base_is_what_the_chart_renders_by_default() -> None:
    base = kustomize(BASE)
    chart = [without_helm_labels(o) for o in render(release="modelpool", namespace="modelpool-system")]
    operator_objects = [o for o in base if o["kind"] not in ("Namespace", "CustomResourceDefinition")]
    assert _by_name(operator_objects) == _by_name(chart)
    assert one(base, "Namespace")["metadata"]["name"] == "modelpool-system"


def test_base_ships_the_generated_crds() -> None:
    crds = by_kind(kustomize(BASE), "CustomResourceDefinition")
    generated = [yaml.safe_load(p.read_text()) for p in sorted((REPO_ROOT / "crds").glob("*.yaml"))]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == sorted(
        generated, key=lambda c: c["metadata"]["name"]
    )


def test_dev_overlay_uses_local_image_and_verbose_logs() -> None:
    container = operator_container(kustomize(OVERLAYS / "dev"))
    assert container["image"] == "modelpool:dev"
    assert container["imagePullPolicy"] == "Never"
    assert container["args"][0] == "--log-level=DEBUG"
    assert "--verbose" in container["args"]


def test_production_overlay_pins_digest_and_runs_a_leader_and_a_standby() -> None:
    objs = kustomize(OVERLAYS / "production")
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    affinity = deployment["spec"]["template"]["spec"]["affinity"]
    (spread,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        spread["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    assert "nodeAffinity" in affinity  # the base patch's, kept
    container = operator_container(objs)
    repository, _, digest = container["image"].partition("@sha256:")
    assert repository == IMAGE and len(digest) == 64
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    assert any(a.startswith("--prometheus-url=http") for a in container["args"])
    # The base's settings survive the patches.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert "--readiness=http://0.0.0.0:8082/readyz" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readyz"}
    assert "--leader-elect" in container["args"]


def test_production_overlay_keeps_a_replica_through_drains_as_the_chart_does() -> None:
    """Two replicas: the PodDisruptionBudget the chart renders for replicaCount 2, the same object."""
    objs = kustomize(OVERLAYS / "production")
    chart = render(release="modelpool", namespace="modelpool-system", set_json={"replicaCount": "2"})
    budget = one(objs, "PodDisruptionBudget")
    assert budget == without_helm_labels(one(chart, "PodDisruptionBudget"))
    assert (
        budget["spec"]["selector"]["matchLabels"]
        == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert by_kind(kustomize(BASE), "PodDisruptionBudget") == []  # one replica: none


def test_production_overlay_spreads_its_replicas_as_the_chart_does() -> None:
    """The chart's default anti-affinity for replicaCount 2 is the overlay's; the overlay adds its
    nodeAffinity (the chart's users set `affinity` for that, which replaces the default)."""
    overlay = one(kustomize(OVERLAYS / "production"), "Deployment")["spec"]["template"]["spec"]["affinity"]
    chart = render(release="modelpool", namespace="modelpool-system", set_json={"replicaCount": "2"})
    chart_affinity = one(chart, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert chart_affinity == {"podAntiAffinity": overlay["podAntiAffinity"]}
    base = one(kustomize(BASE), "Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in base  # one replica: none, as the chart renders it


# namespace, 2 CRDs, ServiceAccount, 2 cluster RBAC, 2 leader-election RBAC, Service, Deployment;
# production also the operator's PodDisruptionBudget (two replicas).
@pytest.mark.parametrize(
    ("folder", "objects"),
    [(BASE, 10), (OVERLAYS / "dev", 10), (OVERLAYS / "production", 11)],
    ids=["base", "dev", "production"],
)
def test_server_side_dry_run_apply(
    folder: Path, objects: int, cluster: DevCluster, namespaces: Callable[..., str], tmp_path: Path
) -> None:
    # The manifests go into modelpool-system; to leave the shared cluster as it is, a throwaway
    # overlay moves them into a fresh namespace, and the API server only validates (dry run).
    ns = namespaces()
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [os.path.relpath(folder, tmp_path)], "namespace": ns})
    )
    proc = cluster.kubectl("apply", "--dry-run=server", "--server-side", "-k", str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stderr
    applied = proc.stdout.splitlines()
    assert len(applied) == objects, applied
    assert all(line.endswith("(server dry run)") for line in applied), applied
    assert "PodSecurity" not in proc.stderr, proc.stderr
