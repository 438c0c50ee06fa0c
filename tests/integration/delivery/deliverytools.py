"""helm, kubectl kustomize and `kubectl auth can-i` for the delivery tests (real binaries)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from modelpool.devcluster import toolchain
from modelpool.devcluster.cluster import DevCluster

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "charts" / "modelpool"
RULES_FILE = CHART / "files" / "alerts" / "prometheusrule.yaml"  # the alerting rules, one source
MANIFESTS = REPO_ROOT / "manifests"
# What `helm template` assumes when no cluster is asked (the chart requires kubeVersion >= 1.28).
KUBE_VERSION = "1.36.3"
# Labels only Helm puts on objects: the kustomize base carries every other one.
HELM_ONLY_LABELS = frozenset({"helm.sh/chart", "app.kubernetes.io/managed-by"})
Obj = dict[str, Any]


def binary(name: str) -> str:
    path = toolchain.bin_dir() / name
    if not path.is_file():
        raise AssertionError(f"{path} is missing; run `modelpool devcluster build` (.ci/setup.sh does)")
    return str(path)


def run(
    tool: str, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a toolchain binary; never raises on a non-zero exit (tests assert on it)."""
    return subprocess.run(
        [binary(tool), *args],
        env=dict(env) if env is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _helm_home(kind: str) -> Path:
    path = toolchain.cache_dir() / "helm" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def helm_env(cluster: DevCluster | None = None) -> dict[str, str]:
    """helm's environment: its own cache/config folders, the cluster's kubeconfig if any."""
    env = cluster.env() if cluster is not None else dict(os.environ)
    for kind in ("cache", "config", "data"):
        env[f"HELM_{kind.upper()}_HOME"] = str(_helm_home(kind))
    return env


def helm(
    *args: str, cluster: DevCluster | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, env=helm_env(cluster), timeout=timeout)


def set_args(values: Mapping[str, str] | None) -> list[str]:
    return [arg for key, value in (values or {}).items() for arg in ("--set-json", f"{key}={value}")]


def helm_template(
    *,
    release: str = "modelpool",
    namespace: str = "modelpool-system",
    values_file: Path | None = None,
    set_json: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; ``set_json`` maps value paths to JSON values."""
    args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    if values_file is not None:
        args += ["-f", str(values_file)]
    return helm(*args, *set_args(set_json))


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(**kwargs: Any) -> list[Obj]:
    proc = helm_template(**kwargs)
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout)


def kustomize(path: Path) -> list[Obj]:
    proc = run("kubectl", "kustomize", str(path))
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return documents(proc.stdout)


def by_kind(objs: Sequence[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Sequence[Obj], kind: str) -> Obj:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_container(objs: Sequence[Obj]) -> Obj:
    containers: list[Obj] = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def without_helm_labels(obj: Obj) -> Obj:
    """A copy of ``obj`` without the labels only Helm sets (on the object and its pod template)."""
    copy: Obj = yaml.safe_load(yaml.safe_dump(obj))
    metas = [copy["metadata"]]
    if copy["kind"] == "Deployment":
        metas.append(copy["spec"]["template"]["metadata"])
    for meta in metas:
        meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_ONLY_LABELS}
    return copy


def can_i(
    cluster: DevCluster, service_account: str, verb: str, resource: str, namespace: str | None = None
) -> bool:
    """`kubectl auth can-i` as the ServiceAccount ``namespace-of-sa:name`` (``service_account``
    is ``<ns>:<name>``); ``resource`` may carry a subresource (``modelpools.modelpool.dev/status``)."""
    args = ["auth", "can-i", verb, f"--as=system:serviceaccount:{service_account}"]
    name, _, sub = resource.partition("/")
    args.append(name)
    if sub:
        args.append(f"--subresource={sub}")
    args += ["-n", namespace] if namespace else []
    proc = cluster.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def install_chart(cluster: DevCluster, release: str, namespace: str, *extra: str) -> None:
    """`helm install --wait` of the chart; fails on an error or a Pod Security warning."""
    proc = helm(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "90s",
        *extra,
        cluster=cluster,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr


def uninstall_chart(cluster: DevCluster, release: str, namespace: str, cluster_objects: list[str]) -> None:
    """`helm uninstall`, then nothing of the release is left, and the CRDs still are.

    ``cluster_objects`` (the release's cluster-scoped objects) must exist before: a name that
    never existed would pass the check that it is gone."""
    missing = [o for o in cluster_objects if cluster.kubectl("get", o, check=False).returncode != 0]
    assert missing == [], f"not installed, so their removal would prove nothing: {missing}"
    proc = helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s", cluster=cluster)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leftovers = cluster.kubectl(
        "get",
        "deployments,serviceaccounts,services,roles,rolebindings",
        "-A",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout.split()
    leftovers += [o for o in cluster_objects if cluster.kubectl("get", o, check=False).returncode == 0]
    assert leftovers == [], leftovers
    # CRDs from the chart's crds/ are never deleted by Helm (pools would be lost).
    assert cluster.kubectl("get", "crd", "modelpools.modelpool.dev", check=False).returncode == 0


PROM_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
"""prometheus-operator's pattern for a duration field (monitoring.coreos.com/v1)."""


def monitoring_crd(kind: str, plural: str, spec: Obj) -> Obj:
    """A prometheus-operator CRD (monitoring.coreos.com/v1) whose ``spec`` has the schema given: the
    fields a test needs typed as prometheus-operator types them, for a cluster that has none."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List", "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }


def prometheus_rule_crd_stub() -> Obj:
    """The fields a PrometheusRule's rules have in prometheus-operator's CRD (monitoring.coreos.com/v1),
    unknown ones refused."""
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    duration = {"type": "string", "pattern": PROM_DURATION}
    rule = {
        "type": "object",
        "required": ["expr"],
        "properties": {
            "alert": {"type": "string"},
            "record": {"type": "string"},
            "expr": {"x-kubernetes-int-or-string": True},
            "for": duration,
            "keep_firing_for": duration,
            "labels": strings,
            "annotations": strings,
        },
    }
    group = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "interval": duration,
            "rules": {"type": "array", "items": rule},
        },
    }
    spec = {"type": "object", "properties": {"groups": {"type": "array", "items": group}}}
    return monitoring_crd("PrometheusRule", "prometheusrules", spec)


@contextmanager
def crds_where_missing(cluster: DevCluster, crds: Sequence[Obj]) -> Iterator[None]:
    """Create those of ``crds`` the cluster lacks (Established before the body runs) and delete
    them after; CRDs already there are left alone."""
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    missing = [
        (crd, name)
        for crd, name in zip(crds, names, strict=True)
        if cluster.kubectl("get", name, check=False).returncode
    ]
    for crd, _ in missing:
        cluster.kubectl("create", "-f", "-", input_text=json.dumps(crd))
    if missing:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(n for _, n in missing))
    try:
        yield
    finally:
        for _, name in missing:
            cluster.kubectl("delete", name, "--wait=false", check=False)


@contextmanager
def own_cluster(name: str) -> Iterator[DevCluster]:
    """A kwok control plane named ``name`` of the calling module's own, with one fake node and no
    CRDs (one left by an earlier run of this checkout is deleted first), deleted afterwards unless
    ``MODELPOOL_KEEP_CLUSTER`` is set; a failed create too, since its control-plane processes would
    outlive the run."""
    workdir = toolchain.cache_dir() / f"kwok-{name}"
    dev = DevCluster(name=name, workdir=workdir, kubeconfig_out=workdir / "kubeconfig.yaml")
    try:
        if dev.exists():
            dev.delete()
        dev.create(nodes=1, gpus_per_node=1)
        yield dev
    finally:
        if not os.environ.get("MODELPOOL_KEEP_CLUSTER"):
            dev.delete()
