"""The real ``tritonserver`` under the security context and volumes the builder gives the Triton pods.

No pod runs on the local cluster's kwok nodes, so this runs the Triton container that
``build_deployment`` makes as a kubelet would, with the nvidia-pytriton wheel's ``tritonserver``
for the image: the container's args and env, under the pod's user, with every capability
dropped and no_new_privs (``podsandbox.py``, ``setpriv``), and its volumes: the memory-backed
``/dev/shm`` and the ``/tmp`` on the node's disk (a folder of the test's, bound). Three times:
with the defaults (the image's user, root for the stock images, without any capability), with
``triton.securityContext`` for PodSecurity ``restricted`` (``runAsNonRoot``, uid and gid 1000,
fsGroup 1000), and with the defaults and the container's root filesystem read-only (below). Each
run checks that the model loads, that the probes' paths answer 200 on the probes' port, that an
inference succeeds, and that the metrics the scrape annotations (and the PodMonitor's ``metrics``
port) name serve ``nv_inference_count``.

The server may write only its two volumes. The image's ``/tmp`` and ``/var/tmp`` are empty
root-owned folders, mode 0755 (as a custom image can have them; the stock images' are mode 1777,
but no image can be pulled here to look), ``HOME`` is ``/`` (what the kubelet sets for a uid
that the image's passwd lacks) and so is the working folder, and the model repository (a copy of
the test models) is root's, mode 0755/0644: the uid-1000 server reads them and can write none of
them. It needs no more, but it does need a ``/tmp`` it may write: Triton's Python backend makes
``/tmp/python_env_XXXXXX`` (a fixed path; ``TMPDIR`` is not read) as it loads, and the server
aborts where it cannot. The pod's ``/tmp`` volume goes over the image's folder, and the Python
backend's folder is checked to be in it. The last test takes that volume out of the built pod
(as the builder made it before) and sees the server abort.

``readOnlyRootFilesystem`` is no field of the ModelPool API (``triton.securityContext`` sets the
pod's user, group and fsGroup): the read-only run adds it to the built container as an admission
policy would (a Kyverno mutate rule; the operator's drift check ignores a field it does not set),
and the sandbox then makes every mount read-only but the pod's volumes and ``/proc``, ``/sys``
and ``/dev``. Root without that flag writes the model's bytecode cache into the repository; with
it, it cannot.

Translated for running outside a pod, and only this:

* ``args[0]``, ``tritonserver``: the image finds ``/opt/tritonserver/bin/tritonserver`` on its
  PATH; here the wheel's binary, by its path.
* ``--backend-directory`` is added: the image's default (``/opt/tritonserver/backends``) holds
  the Python backend ready to run; the wheel's gets the stub for this interpreter
  (:func:`prepare_backends`).
* ``--model-repository``: the pod's path (``/models``, a folder baked into an image) becomes the
  copy.
* ``--http-port``, ``--grpc-port``, ``--metrics-port``: each container port becomes a free port,
  and ``--http-address``, ``--grpc-address``, ``--metrics-address=127.0.0.1`` are added (a pod has
  a network namespace of its own; servers here listen on loopback only). The probes' and the
  scrape's ports are looked up in the same map, by name or number, as the kubelet does.
* env: the image's part (``PATH`` and ``LD_LIBRARY_PATH`` for the wheel,
  :func:`triton_environment`) and ``HOME``, then the container's ``env``.
* root's home, where the venv and the interpreter live on this machine (mode 0700), is hidden
  and only they are bound back: an image keeps them in world-readable ``/opt``.

Not reproduced: the pod's ``RuntimeDefault`` seccomp profile. It is the container runtime's own
(containerd's built-in list, CRI-O's ``containers-common`` seccomp.json); neither a runtime nor
that file is installed here, and a copy of its list kept in this project would test the copy, not
the runtime. Nor are the pod's PID, network and IPC namespaces or its cgroup limits.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from integration.routing.test_triton_launcher import _text_input
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.builders.triton import build_deployment, parse_quantity
from modelpool.devcluster.triton import (
    SHM_DIR,
    TritonProcess,
    prepare_backends,
    triton_environment,
    tritonserver_root,
)
from unit.operator.test_disruption_budgets import NS, POOL, UID, _variant
from unit.operator.test_triton_pod_security import RESTRICTED

pytestmark = pytest.mark.triton

Obj = dict[str, Any]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"
SANDBOX = Path(__file__).with_name("podsandbox.py")
MODEL = "echo_small"
POD_REPOSITORY = "/models"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOME = "/"
IMAGE_TMP_MODE = "0755"
"""The image's ``/tmp`` (and ``/var/tmp``): root's, nobody else may write it."""
NO_CAPABILITIES = "0000000000000000"
CASES: dict[str, tuple[Obj | None, bool]] = {
    "image-user": (None, False),
    "restricted": (RESTRICTED, False),
    "image-user-read-only-root": (None, True),
}
"""Each run's ``triton.securityContext`` and whether the container's root filesystem is read-only."""


def pod_template(security_context: Obj | None, *, read_only_root: bool = False) -> Obj:
    """The Triton pod template the builder makes for a one-variant pool serving ``echo_small``;
    with ``read_only_root``, its container as an admission policy that sets
    ``readOnlyRootFilesystem`` leaves it (the builder never sets it)."""
    extra = {} if security_context is None else {"triton": {"securityContext": security_context}}
    variant = _variant("small", model={"name": MODEL, "repository": POD_REPOSITORY}, **extra)
    spec = ModelPoolSpec.model_validate({"gpuPool": {"gpuBudget": 4}, "variants": [variant]})
    template: Obj = build_deployment(POOL, NS, UID, spec, spec.variants[0], replicas=1)["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert "readOnlyRootFilesystem" not in container["securityContext"]
    if read_only_root:
        container["securityContext"]["readOnlyRootFilesystem"] = True
    return template


def without_tmp_volume(template: Obj) -> Obj:
    """``template`` without its ``/tmp`` volume and mount: the pod as the builder made it before."""
    pod = template["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    container["volumeMounts"].remove(mount)
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != mount["name"]]
    return template


def read_only_repository(dest: Path) -> Path:
    """The test models as a repository that root owns: readable by everyone, writable by root."""
    shutil.copytree(FIXTURES, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost folder above ``path`` that others may not enter (no ``o+x``), if any."""
    return next((p for p in reversed(path.parents) if not p.stat().st_mode & 0o001), None)


def covers(needed: Iterable[Path]) -> dict[str, Obj]:
    """Folders to hide in the sandbox, each with its mode and the ``needed`` paths under it to bind
    back: the image's ``/tmp`` and ``/var/tmp`` (root's, :data:`IMAGE_TMP_MODE`) always, and each
    folder above a needed path that others may not enter."""
    result: dict[str, Obj] = {folder: {"mode": IMAGE_TMP_MODE, "keep": []} for folder in ("/tmp", "/var/tmp")}
    for path in sorted({p.resolve() for p in needed}):
        outer = next((Path(c) for c in result if path.is_relative_to(c)), None) or _closed_ancestor(path)
        if outer is not None:
            result.setdefault(str(outer), {"mode": "0755", "keep": []})["keep"].append(str(path))
    return result


class PodTriton(TritonProcess):
    """The builder's Triton container, run by ``podsandbox.py`` with the translations above;
    ``node_dir`` holds the node's folders of its emptyDirs on disk, one per volume name (the
    kubelet's ``/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir``)."""

    def __init__(self, template: Obj, repository: Path, *, node_dir: Path) -> None:
        self.pod: Obj = template["spec"]
        self.node_dir = node_dir
        (self.container,) = self.pod["containers"]
        self.read_only_root: bool = self.container["securityContext"].get("readOnlyRootFilesystem", False)
        assert "command" not in self.container, "the image's entrypoint runs args"
        loads = [a.partition("=")[2] for a in self.container["args"] if a.startswith("--load-model=")]
        super().__init__(repository, loads, startup_timeout=120.0)
        context = self.pod.get("securityContext", {})
        self.uid: int = context.get("runAsUser", 0)  # unset: the image's user, root for the stock images
        self.gid: int = context.get("runAsGroup", 0)
        self.groups: list[int] = [context["fsGroup"]] if "fsGroup" in context else []

    def local_port(self, port: str | int) -> int:
        """Where a container port (by name or number) listens here."""
        local = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        for declared in self.container["ports"]:
            if port in (declared["name"], declared["containerPort"]):
                return local[declared["name"]]
        raise AssertionError(f"the container declares no port {port!r}")

    def argv(self) -> list[str]:
        args = list(self.container["args"])
        assert args[0] == "tritonserver", args
        translated = [
            str(tritonserver_root() / "bin" / "tritonserver"),
            f"--backend-directory={prepare_backends()}",
        ]
        for arg in args[1:]:
            flag, _, value = arg.partition("=")
            if flag == "--model-repository":
                assert value == POD_REPOSITORY, arg
                arg = f"{flag}={self.model_repository}"
            elif flag in ("--http-port", "--grpc-port", "--metrics-port"):
                arg = f"{flag}={self.local_port(int(value))}"
            translated.append(arg)
        return [*translated, *(f"--{api}-address={self.host}" for api in ("http", "grpc", "metrics"))]

    def environment(self) -> dict[str, str]:
        env = triton_environment({"PATH": IMAGE_PATH, "HOME": HOME})
        for var in self.container.get("env", []):
            assert "valueFrom" not in var, "this test's pool has no Secret to read"
            env[var["name"]] = var.get("value", "")
        return env

    def volume_folder(self, mount_path: str) -> Path:
        """The node's folder of the disk-backed emptyDir the container mounts at ``mount_path``."""
        (mount,) = [m for m in self.container["volumeMounts"] if m["mountPath"] == mount_path]
        return self.node_dir / mount["name"]

    def volumes(self) -> list[Obj]:
        """The container's mounts of the pod's emptyDirs (the only volume kind this sandbox makes):
        memory-backed, a tmpfs of its sizeLimit; on disk, the node's folder (a sizeLimit there is
        enforced by the kubelet evicting the pod, which this sandbox does not do: none is set)."""
        by_name = {v["name"]: v for v in self.pod.get("volumes", [])}
        volumes = []
        for mount in self.container.get("volumeMounts", []):
            assert set(mount) == {"name", "mountPath"}, mount  # read-write, the whole volume
            empty_dir = by_name[mount["name"]]["emptyDir"]
            if empty_dir.get("medium") == "Memory":
                size = parse_quantity(empty_dir["sizeLimit"])
                assert size is not None
                volumes.append({"path": mount["mountPath"], "size": int(size)})
            else:
                assert empty_dir == {}, empty_dir
                source = self.volume_folder(mount["mountPath"])
                source.mkdir(parents=True)
                volumes.append({"path": mount["mountPath"], "source": str(source)})
        return volumes

    def command(self) -> list[str]:
        lib_dirs = [Path(d) for d in self.environment()["LD_LIBRARY_PATH"].split(os.pathsep) if d]
        needed = [tritonserver_root(), prepare_backends(), Path(sys.prefix), Path(sys.base_prefix), *lib_dirs]
        sandbox = {
            "covers": covers([*needed, self.model_repository]),
            "volumes": self.volumes(),
            "readOnlyRoot": self.read_only_root,
            "uid": self.uid,
            "gid": self.gid,
            "groups": self.groups,
            "fsGroup": self.groups[0] if self.groups else None,
            "cwd": HOME,
            "env": self.environment(),
            "argv": self.argv(),
        }
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            str(SANDBOX),
            json.dumps(sandbox),
        ]


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == pgid:
                    pids.append(int(proc.name))
            except ProcessLookupError:
                continue
    return pids


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.mark.parametrize("case", list(CASES))
def test_tritonserver_serves_under_the_pods_security_context(case: str, tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the sandbox mounts and changes user: run the integration tests as root"
    security_context, read_only_root = CASES[case]
    template = pod_template(security_context, read_only_root=read_only_root)
    repository = read_only_repository(tmp_path / "models")
    triton = PodTriton(template, repository, node_dir=tmp_path / "node")
    with triton:
        assert triton.pid is not None
        processes = [_status(pid) for pid in _group_pids(triton.pid)]
        assert len(processes) >= 2, "tritonserver and the model's Python backend stub"
        for status in processes:
            assert status["Uid"].split() == [str(triton.uid)] * 4, status
            assert status["Gid"].split() == [str(triton.gid)] * 4, status
            assert status["Groups"].split() == [str(g) for g in triton.groups], status
            assert status["NoNewPrivs"] == "1", status
            caps = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
            assert {status[c] for c in caps} == {NO_CAPABILITIES}, status

        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = triton.container[probe]["httpGet"]
            url = f"http://{triton.host}:{triton.local_port(get['port'])}{get['path']}"
            assert httpx.get(url, timeout=5.0).status_code == 200, (probe, url)

        client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
        try:
            answer = client.infer(MODEL, [_text_input(["pay my bill", "x" * 80])])
        finally:
            client.close()
        assert answer.as_numpy("PROBABILITIES").max(axis=1) == pytest.approx([0.95, 0.4])
        assert answer.as_numpy("LABEL").dtype == np.int64

        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        scraped = triton.local_port(int(annotations["prometheus.io/port"]))
        assert scraped == triton.local_port("metrics")  # the port the PodMonitor names
        url = f"http://{triton.host}:{scraped}{annotations['prometheus.io/path']}"
        counted = f'nv_inference_count{{model="{MODEL}",version="1"}} 2'  # the request's two items
        deadline = time.monotonic() + 10.0  # Triton counts a request as it releases it, maybe after answering
        while (metrics := httpx.get(url, timeout=5.0)).status_code == 200 and counted not in metrics.text:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert metrics.status_code == 200
        assert counted in metrics.text, metrics.text[-3000:]

        # The Python backend's shared memory is in the pod's memory-backed /dev/shm volume.
        regions = triton.shm_regions
        assert regions, "the Python backend maps shm regions while running"
        assert not any((SHM_DIR / name).exists() for name in regions), "the host's /dev/shm was used"
        # Its Python environment folder is in the pod's /tmp volume, made by the pod's user.
        envs = list(triton.volume_folder("/tmp").glob("python_env_*"))
        assert envs, sorted(p.name for p in triton.volume_folder("/tmp").iterdir())
        assert {p.stat().st_uid for p in envs} == {triton.uid}
    assert not triton.running
    # Python writes the model's bytecode cache beside model.py where it may: root owns the
    # repository, so only the root run with a writable root filesystem could.
    assert any(repository.rglob("__pycache__")) == (triton.uid == 0 and not triton.read_only_root)


def test_without_its_tmp_volume_the_python_backend_aborts(tmp_path: Path) -> None:
    """Why the pod brings its own ``/tmp``: the same restricted container without that volume (the
    pod as the builder made it before) gets the image's ``/tmp``, which its user may not write here
    (root's, 0755, as in a custom image; under ``readOnlyRootFilesystem`` nobody may), and the
    server aborts as it loads a model. The stock images' ``/tmp`` (mode 1777) hid this."""
    assert os.geteuid() == 0, "the sandbox mounts and changes user: run the integration tests as root"
    repository = read_only_repository(tmp_path / "models")
    template = without_tmp_volume(pod_template(RESTRICTED))
    triton = PodTriton(template, repository, node_dir=tmp_path / "node")
    with pytest.raises(RuntimeError, match="Failed to create temporary directory for Python environments"):
        triton.start()
    assert not triton.running
