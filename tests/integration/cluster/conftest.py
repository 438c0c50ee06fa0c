"""One real local cluster and one operator per test session; a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cluster.kubetools import Kube, OperatorProcess, wait_for
from modelpool.devcluster import toolchain
from modelpool.devcluster.cluster import DevCluster

REPO_ROOT = Path(__file__).resolve().parents[3]
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
    workdir = toolchain.cache_dir() / "kwok-test"
    dev = DevCluster(name="modelpool-test", workdir=workdir, kubeconfig_out=workdir / "kubeconfig-test.yaml")
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
    if not os.environ.get("MODELPOOL_KEEP_CLUSTER"):
        dev.delete()


@pytest.fixture(scope="session")
def operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def kube(cluster: DevCluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[Kube]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        30,
        "default service account",
    )
    yield Kube(cluster, name)
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(f"--- operator log tail ---\n{operator.log_tail()}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
