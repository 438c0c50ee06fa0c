"""A pool whose namespace is being deleted: the children it can no longer create are no warning.

While a namespace terminates, the namespace controller removes a pool's children before (or while)
it removes the pool, and the operator may reconcile the pool in between. The API server then
refuses every new child with 403 and the cause NamespaceTerminating; that is the pool going
away, not a rejected child, so no ChildRejected event or conflict is reported.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from integration.cluster.kubetools import wait_for
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers.pool_reconciler import DEPLOYMENT, SERVICE, _converge_variant
from modelpool.controllers.pool_status import ChildIssues
from modelpool.devcluster.cluster import DevCluster
from modelpool.kube import KubeClient, KubeError, resource_path
from modelpool.kubelogin import credentials_from_kubeconfig

SPEC = ModelPoolSpec.model_validate(
    {
        "gpuPool": {"gpuBudget": 4},
        "variants": [{"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}],
    }
)


@pytest.fixture
def terminating_namespace(cluster: DevCluster) -> Iterator[str]:
    """A namespace held in Terminating by a ConfigMap with a finalizer nobody removes."""
    name = f"term-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("-n", name, "create", "configmap", "hold")
    cluster.kubectl(
        "-n", name, "patch", "configmap", "hold", "-p", '{"metadata":{"finalizers":["test/hold"]}}'
    )
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    wait_for(
        lambda: (
            "Terminating"
            in cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}").stdout
            or None
        ),
        30,
        "namespace Terminating",
    )
    yield name
    cluster.kubectl(
        "-n",
        name,
        "patch",
        "configmap",
        "hold",
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        check=False,
    )


async def test_api_server_names_the_terminating_namespace(
    cluster: DevCluster, terminating_namespace: str
) -> None:
    kube = KubeClient(credentials_from_kubeconfig(cluster.kubeconfig))
    try:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80}]},
        }
        with pytest.raises(KubeError) as caught:
            await kube.apply(resource_path("v1", "services", terminating_namespace, "x"), body)
    finally:
        await kube.close()
    assert caught.value.status == 403
    assert caught.value.namespace_terminating, (caught.value.causes, caught.value.message)


async def test_children_refused_by_a_terminating_namespace_are_not_reported(
    cluster: DevCluster, terminating_namespace: str
) -> None:
    kube = KubeClient(credentials_from_kubeconfig(cluster.kubeconfig))
    events: list[tuple[str, str, str]] = []
    issues = ChildIssues()
    try:
        result = await _converge_variant(
            kube,
            terminating_namespace,
            "bank",
            str(uuid.uuid4()),
            SPEC,
            SPEC.variants[0],
            1,
            lambda kind, reason, message: events.append((kind, reason, message)),
            issues,
            {SERVICE.kind: {}, DEPLOYMENT.kind: {}},
        )
    finally:
        await kube.close()
    assert result is None
    assert events == []
    assert issues.conflicts == []
