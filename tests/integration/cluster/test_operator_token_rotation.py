"""The operator keeps working when its token is rotated and the old one stops being valid.

A pod's service-account token is projected with a lifetime; the kubelet writes a new one into the
same file before the old one expires; a cloud's exec credential plugin gives a new one when asked.
Here, on the real local cluster, the operator logs in with a kubeconfig whose ``tokenFile`` holds a
token bound to a Secret, or whose exec plugin prints that file's token. The file is then given a
new token bound to another Secret, and the first Secret is deleted, which makes the API server
refuse the old token (401) from then on, as it refuses an expired one. The operator must go on
reconciling: kopf's session (its watches and patches) and the operator's own client share one
signer, which reads the new token.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.cluster.bound_tokens import answers, bound_token, token_kubeconfig, write_atomically
from integration.cluster.kubetools import healthy, start_operator, wait_for
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.processes import stop_process
from modelpool.devcluster.triton import free_port

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[3]
POOL = REPO_ROOT / "manifests" / "samples" / "modelpool-banking77.yaml"


@pytest.fixture
def namespace(cluster: DevCluster) -> Iterator[str]:
    """A namespace with ServiceAccount ``op``, bound to cluster-admin for the test's length."""
    name = f"tok-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("create", "serviceaccount", "op", "-n", name)
    binding = f"modelpool-token-{name}"
    cluster.kubectl(
        "create", "clusterrolebinding", binding, "--clusterrole=cluster-admin", f"--serviceaccount={name}:op"
    )
    yield name
    cluster.kubectl("delete", "clusterrolebinding", binding, check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


PLUGIN = """#!{python}
import json, pathlib
token = pathlib.Path({token_file!r}).read_text().strip()
credential = {{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}}
print(json.dumps({{**credential, "status": {{"token": token}}}}))
"""


def _user(login: str, token_file: Path) -> dict[str, object]:
    """A kubeconfig user that logs in with the token in ``token_file``: as its ``tokenFile``, or
    through an exec credential plugin that prints it."""
    if login == "tokenFile":
        return {"tokenFile": str(token_file)}
    plugin = token_file.with_name("plugin")
    plugin.write_text(PLUGIN.format(python=sys.executable, token_file=str(token_file)))
    plugin.chmod(0o755)
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }


def _deployments(cluster: DevCluster, namespace: str) -> list[str]:
    return cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout.split()


def _gone(cluster: DevCluster, namespace: str) -> bool:
    found = cluster.kubectl("get", "modelpool", "banking77", "-n", namespace, "--ignore-not-found", "-o=name")
    return not found.stdout.strip()


def _observed(cluster: DevCluster, namespace: str) -> tuple[int, int]:
    pool = json.loads(cluster.kubectl("get", "modelpool", "banking77", "-n", namespace, "-o", "json").stdout)
    observed = [c.get("observedGeneration", 0) for c in pool.get("status", {}).get("conditions", [])]
    return pool["metadata"]["generation"], min(observed, default=0)


@pytest.mark.parametrize("login", ["tokenFile", "exec"])
def test_the_operator_goes_on_after_its_token_is_rotated_and_the_old_one_refused(
    cluster: DevCluster, namespace: str, tmp_path: Path, paused_session_operator: None, login: str
) -> None:
    token_file = tmp_path / "token"
    write_atomically(token_file, bound_token(cluster, namespace, "bind-1") + "\n")
    old_token = token_file.read_text().strip()
    user = _user(login, token_file)
    kubeconfig, server, ca = token_kubeconfig(cluster, namespace, user, tmp_path / "kubeconfig")
    log = tmp_path / "operator.log"
    healthz = f"http://127.0.0.1:{free_port()}/healthz"
    env = {"KUBECONFIG": str(kubeconfig), "MODELPOOL_RESYNC_SECONDS": "1"}
    proc = start_operator(log, env, "--namespace", namespace, "--liveness", healthz)
    try:
        wait_for(lambda: healthy(healthz), 60, "kopf's liveness endpoint")
        cluster.kubectl("apply", "-n", namespace, "-f", str(POOL))
        wait_for(lambda: len(_deployments(cluster, namespace)) == 3, 30, "the pool's 3 Deployments")

        write_atomically(token_file, bound_token(cluster, namespace, "bind-2") + "\n")
        cluster.kubectl("delete", "secret", "bind-1", "-n", namespace)
        wait_for(lambda: answers(server, ca, old_token) == 401 or None, 30, "the old token refused")

        # The operator's own client writes children; kopf watches them and patches its annotations.
        deleted = _deployments(cluster, namespace)[0]
        cluster.kubectl("delete", deleted, "-n", namespace)
        wait_for(lambda: deleted in _deployments(cluster, namespace) or None, 60, f"{deleted} recreated")
        cluster.kubectl(
            "patch", "modelpool", "banking77", "-n", namespace, "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/variants/0/maxReplicas", "value": 5}]',
        )  # fmt: skip
        wait_for(
            lambda: (lambda g: g[0] == g[1] or None)(_observed(cluster, namespace)),
            60,
            "the pool's status at its new generation",
        )
        # kopf removes its finalizer from the deleted pool: a patch of kopf's own, with the new token.
        cluster.kubectl("delete", "modelpool", "banking77", "-n", namespace, "--wait=false")
        wait_for(lambda: _gone(cluster, namespace) or None, 60, "the pool gone (kopf's finalizer removed)")
        assert proc.poll() is None, log.read_text()[-4000:]
    finally:
        cluster.kubectl("delete", "modelpool", "banking77", "-n", namespace, "--wait=false", check=False)
        stop_process(proc, grace=10, group=True)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    # kopf's session sent its refused requests again with the new token itself: kopf never saw a
    # 401, so it never had to log in again.
    assert "Re-authentication" not in text and "Unauthorized" not in text, text[-4000:]
