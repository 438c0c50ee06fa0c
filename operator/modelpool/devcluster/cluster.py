"""The embedded default cluster: a real control plane with kwok's fake GPU nodes.

``kwokctl --runtime binary`` runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok-controller as local processes from the binaries that
:mod:`modelpool.devcluster.toolchain` built. Nodes are Node objects that kwok
keeps Ready and advertise ``nvidia.com/gpu``; pods scheduled on them are marked
Running by kwok (no container runs, nothing listens on their IPs).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpool.devcluster import toolchain

DEFAULT_NAME = "modelpool"


def checkout_name(base: str, root: Path) -> str:
    """``base`` and a short hash of the checkout ``root``: the test clusters (and their workdirs) of
    parallel checkouts sharing one cache stay apart (``modelpool-test-1a2b3c``)."""
    return f"{base}-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]}"


def create_lock_path() -> Path:
    """The file whose lock ``kwokctl create`` runs under, in the project's cache."""
    return toolchain.cache_dir() / "kwokctl-create.lock"


@contextlib.contextmanager
def _create_lock() -> Iterator[None]:
    """One ``kwokctl create`` at a time across processes: each picks its ports by probing
    (v0.8.0 counts down from 32767), so two at once may pick the same ones before either listens."""
    path = create_lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fake_gpu_node(
    name: str,
    gpus: int,
    resource: str = "nvidia.com/gpu",
    zone: str = "zone-a",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node object kwok manages, advertising ``gpus`` of ``resource``."""
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", resource: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": zone,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                **(labels or {}),
            },
        },
        "spec": {},
        "status": {
            "allocatable": dict(capacity),
            "capacity": dict(capacity),
            "phase": "Running",
        },
    }


ADMISSION_PLUGINS = ("OwnerReferencesPermissionEnforcement",)
"""Admission plugins the local API server runs on top of its defaults. OpenShift enforces owner
references' permissions: setting ``blockOwnerDeletion`` on a child needs ``update`` of the owner's
``finalizers``. Enforced here too, the operator's RBAC is tested as it works there."""


KWOKCTL_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
"""
"""kwokctl's settings: every component (etcd, kube-apiserver, the controller-manager, the scheduler,
kwok) listens on loopback only. kwokctl's default is 0.0.0.0, which would offer an etcd without
authentication to the whole network."""


@dataclass
class DevCluster:
    """A kwok cluster with the binary runtime, isolated in its own kwok workdir."""

    name: str = DEFAULT_NAME
    workdir: Path = field(default_factory=lambda: toolchain.cache_dir() / "kwok")
    kubeconfig_out: Path | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.kubeconfig_out or self.workdir / "clusters" / self.name / "kubeconfig.yaml"

    def env(self) -> dict[str, str]:
        """The environment of kwokctl, kubectl and helm for this cluster: their caches stay in the
        project's cache (kubectl's discovery cache per cluster), not in ``~/.kube`` or ``~/.cache``."""
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.workdir)
        env["PATH"] = f"{toolchain.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.kubectl_cache)
        for kind in ("cache", "config", "data"):
            env[f"HELM_{kind.upper()}_HOME"] = str(toolchain.cache_dir() / "helm" / kind)
        return env

    @property
    def kubectl_cache(self) -> Path:
        """kubectl's discovery cache for this cluster, dropped when the cluster is created."""
        return self.workdir / "kubectl-cache" / self.name

    def _kwokctl(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [str(toolchain.binary("kwokctl")), "--name", self.name, *args]
        proc = subprocess.run(
            cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(toolchain.binary("kubectl")),
            "--kubeconfig",
            str(self.kubeconfig),
            # Discovery cached per cluster, dropped when the cluster is created, so CRD changes show.
            "--cache-dir",
            str(self.kubectl_cache),
        ]
        cmd += args
        proc = subprocess.run(
            cmd,
            env=self.env(),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def exists(self) -> bool:
        return (self.cluster_dir / "kwok.yaml").is_file()

    def is_up(self) -> bool:
        if not self.exists():
            return False
        proc = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    def create(self, nodes: int = 2, gpus_per_node: int = 8, wait_seconds: int = 180) -> None:
        """Start the control plane (or reuse a running one that listens on loopback only) and
        register the fake GPU nodes."""
        if self.is_up() and not self.loopback_only():
            # Made before KWOKCTL_CONFIG: every port open to the network, etcd's too. Made anew.
            self.delete()
        if not self.is_up():
            if self.exists():
                self.delete()
            bins = toolchain.bin_dir()
            config = self.workdir / "kwokctl.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(KWOKCTL_CONFIG)
            args = [
                "--config",
                str(config),
                "create",
                "cluster",
                "--runtime",
                "binary",
                "--extra-args",
                f"kube-apiserver=enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                "--kube-apiserver-binary",
                str(bins / "kube-apiserver"),
                "--kube-controller-manager-binary",
                str(bins / "kube-controller-manager"),
                "--kube-scheduler-binary",
                str(bins / "kube-scheduler"),
                "--kwok-controller-binary",
                str(bins / "kwok"),
                "--etcd-binary",
                str(bins / "etcd"),
                "--wait",
                f"{wait_seconds}s",
            ]
            if self.kubeconfig_out is not None:
                args += ["--kubeconfig", str(self.kubeconfig_out)]
            with _create_lock():  # held from the port pick until every component listens (--wait)
                self._kwokctl(*args, timeout=wait_seconds + 120)
            shutil.rmtree(self.kubectl_cache, ignore_errors=True)
        self.ensure_nodes(nodes, gpus_per_node)

    def ensure_nodes(
        self, nodes: int, gpus_per_node: int, prefix: str = "gpu-node", labels: dict[str, str] | None = None
    ) -> None:
        """Register ``nodes`` fake GPU nodes and wait until kwok reports them Ready."""
        manifests = [fake_gpu_node(f"{prefix}-{i}", gpus_per_node, labels=labels) for i in range(nodes)]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.kubectl("get", "nodes", "-o", "json").stdout
            ready = [
                n
                for n in json.loads(out)["items"]
                if n["metadata"]["name"].startswith(prefix)
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            if len(ready) >= nodes:
                return
            time.sleep(1)
        raise TimeoutError(f"kwok did not mark {nodes} fake nodes Ready within 60 s")

    def delete(self) -> None:
        if self.exists():
            self._kwokctl("delete", "cluster", timeout=120)

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "clusters" / self.name

    def loopback_only(self) -> bool:
        """Whether every component's addresses are 127.0.0.1 (kwokctl's ``bindAddress``)."""
        try:
            args = [str(a) for comp in self.components() for a in comp.get("args") or []]
        except (OSError, StopIteration, yaml.YAMLError):
            return False
        return not any("0.0.0.0" in a for a in args)

    def components(self) -> list[dict[str, Any]]:
        """The components as ``kwokctl`` recorded them in the cluster's ``kwok.yaml``, in start
        order: each one's name, binary, args and working directory (``kwokctl --runtime binary``
        runs each as a local process)."""
        docs = yaml.safe_load_all((self.cluster_dir / "kwok.yaml").read_text())
        config = next(d for d in docs if d and d.get("kind") == "KwokctlConfiguration")
        return [dict(comp) for comp in config.get("components") or []]

    def component(self, name: str) -> dict[str, Any]:
        """One component of :meth:`components`."""
        for comp in self.components():
            if comp.get("name") == name:
                return comp
        raise KeyError(f"cluster {self.name} has no component {name!r}")

    def _pid_file(self, name: str) -> Path:
        return self.cluster_dir / "pids" / f"{name}.pid"

    def component_pid(self, name: str) -> int | None:
        """The running component's process id (from kwokctl's pid file), or None when it is not running."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        try:  # one this process started (start_component) and that exited since: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        except ChildProcessError:
            pass
        return pid

    def stop_component(self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 30) -> None:
        """Stop one control-plane process (``kwokctl`` in v0.8 only stops the whole cluster):
        SIGKILL by default, as a crash or an OOM kill would; ``sig=SIGTERM`` for a graceful stop."""
        pid = self.component_pid(name)
        if pid is None:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.component_pid(name) is None:  # gone (and reaped, when it was our child)
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} (pid {pid}) did not exit within {timeout:.0f} s of {sig.name}")

    def start_component(self, name: str, wait_seconds: float = 60) -> int:
        """Start one stopped control-plane process again the way ``kwokctl --runtime binary`` does
        (same binary, args and working directory, output appended to ``logs/<name>.log``, the pid in
        ``pids/<name>.pid`` so that ``kwokctl delete cluster`` still stops it). For the API server,
        returns once ``/readyz`` answers ok."""
        if (pid := self.component_pid(name)) is not None:
            return pid
        comp = self.component(name)
        env = dict(os.environ) | {e["name"]: str(e.get("value", "")) for e in comp.get("envs") or []}
        with (self.cluster_dir / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [comp["binary"], *comp.get("args", [])],
                cwd=comp.get("workDir") or self.cluster_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file(name).write_text(str(proc.pid))
        if name == "kube-apiserver" or (name == "etcd" and self.component_pid("kube-apiserver")):
            self.wait_ready(wait_seconds)
        return proc.pid

    def restart_component(self, name: str, down_seconds: float = 0.0, wait_seconds: float = 60) -> float:
        """Kill one component, leave it down ``down_seconds``, start it again (and every component
        that exited meanwhile, see :meth:`ensure_running`); the seconds from the start until the API
        server answered ready."""
        self.stop_component(name)
        time.sleep(down_seconds)
        started = time.monotonic()
        self.start_component(name, wait_seconds)
        self.ensure_running(wait_seconds)
        return time.monotonic() - started

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the API server answers ``/readyz`` (which includes its etcd) with ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.is_up():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the API server of {self.name} was not ready within {timeout:.0f} s")

    def ensure_running(self, wait_seconds: float = 60) -> None:
        """Start every control-plane component that is not running, as the kubelet restarts a
        control plane's static pods. kube-controller-manager and kube-scheduler exit on purpose when
        they cannot renew their leader lease (an API server or etcd down for more than ~10 s), and
        with ``kwokctl --runtime binary`` nothing else would start them again."""
        names = [comp["name"] for comp in self.components()]
        for name in names:
            if self.component_pid(name) is None:
                self.start_component(name, wait_seconds)
        if "kube-apiserver" in names:
            self.wait_ready(wait_seconds)
