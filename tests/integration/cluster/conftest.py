"""One real local cluster and one operator per test session; a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from integration.cluster.kubetools import Kube, OperatorProcess, wait_for
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.triton import free_port


@pytest.fixture(scope="session")
def operator(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator") / "operator.log",
        env_extra={"MODELPOOL_METRICS_PORT": str(free_port()), "MODELPOOL_METRICS_ADDR": "127.0.0.1"},
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def paused_session_operator(operator: OperatorProcess) -> Iterator[None]:
    """The suite's operator (every namespace) paused while a test runs an operator of its own that
    must be the only one to reconcile (or write the status of) its pools."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


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
