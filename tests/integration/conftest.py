"""The real local cluster, shared by every integration test that needs one (one per session)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpool.devcluster import toolchain
from modelpool.devcluster.cluster import DevCluster, checkout_name
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODELS = REPO_ROOT / "tests" / "fixtures" / "triton_models"
SCRAPE_S = 1.0
NODES = 2
GPUS_PER_NODE = 8


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    missing = [
        t
        for t in (*toolchain.KUBE_COMMANDS, "etcd", "kwok", "kwokctl")
        if not (toolchain.bin_dir() / t).is_file()
    ]
    if missing:
        pytest.fail(
            f"control plane binaries missing ({missing}); "
            "run `modelpool devcluster build` (.ci/setup.sh does)"
        )
    # Named after this checkout (and in a workdir of its own): another checkout's run, sharing the
    # cache, neither reuses nor deletes it.
    name = checkout_name("modelpool-test", REPO_ROOT)
    workdir = toolchain.cache_dir() / f"kwok-{name}"
    dev = DevCluster(name=name, workdir=workdir, kubeconfig_out=workdir / "kubeconfig.yaml")
    try:
        dev.create(nodes=NODES, gpus_per_node=GPUS_PER_NODE)
        dev.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
        dev.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelpools.modelpool.dev",
            "crd/routingpolicies.modelpool.dev",
        )
        yield dev
    finally:  # a failed setup too: its control-plane processes would outlive the run
        if not os.environ.get("MODELPOOL_KEEP_CLUSTER"):
            dev.delete()


@pytest.fixture
def namespace(cluster: DevCluster) -> Iterator[str]:
    """A namespace of the test's own, deleted after it (without waiting)."""
    name = f"ns-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def echo_triton() -> Iterator[TritonProcess]:
    """A real tritonserver serving the ``echo_small`` test model (one per test module)."""
    with TritonProcess(FIXTURE_MODELS, ["echo_small"]) as server:
        yield server


@pytest.fixture(scope="module")
def echo_prometheus(echo_triton: TritonProcess) -> Iterator[PrometheusProcess]:
    """A real Prometheus scraping ``echo_triton`` every SCRAPE_S seconds."""
    with PrometheusProcess(
        {"triton": [f"127.0.0.1:{echo_triton.metrics_port}"]}, scrape_interval_s=SCRAPE_S
    ) as prom:
        yield prom
