"""Tokens the API server stops accepting on demand, and kubeconfigs that log in with them, for
the tests of token rotation (the operator's and the router's)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
import yaml

from modelpool.devcluster.cluster import DevCluster


def bound_token(cluster: DevCluster, namespace: str, secret: str) -> str:
    """A token of ``op`` that is valid only while Secret ``secret`` exists."""
    cluster.kubectl("create", "secret", "generic", secret, "-n", namespace)
    return cluster.kubectl(
        "create",
        "token",
        "op",
        "-n",
        namespace,
        "--bound-object-kind=Secret",
        f"--bound-object-name={secret}",
        "--duration=10m",
    ).stdout.strip()


def write_atomically(path: Path, text: str) -> None:
    """As the kubelet's atomic writer does: the file is replaced, never half written."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def token_kubeconfig(
    cluster: DevCluster, namespace: str, user: dict[str, object], out: Path
) -> tuple[Path, str, Path]:
    """A kubeconfig logging in as ``user``; with the server's URL and CA file."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server_entry = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server_entry}],
        "users": [{"name": "sa", "user": user}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    ca = out.with_name("ca.crt")
    ca_path = server_entry.get("certificate-authority")
    if ca_path:
        ca.write_text((cluster.kubeconfig.parent / ca_path).read_text())
    else:
        ca.write_bytes(base64.b64decode(server_entry["certificate-authority-data"]))
    return out, server_entry["server"], ca


def answers(server: str, ca: Path, token: str) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server}/api", headers=headers, verify=context).status_code
