"""Start and stop real ``tritonserver`` processes from the ``nvidia-pytriton`` wheel.

The wheel ships Triton server (with the Python backend) under ``pytriton/tritonserver``.
Running that binary directly needs three things (see ``shared/README.md``):

* the Python backend stub for the running interpreter copied into ``backends/python``
  (:func:`prepare_backends` does it once, into a cache folder);
* the venv's ``bin`` first on ``PATH`` (the stub takes ``sys.prefix`` from the ``python3``
  it finds) and the interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (pyenv builds),
  plus the wheel's ``nvidia_pytriton.libs``;
* a deadline and a stop by PID: a broken stub hangs in "loading" and leaks
  ``/dev/shm/triton_python_backend_shm_region_*``.

:class:`TritonProcess` wraps all of that::

    with TritonProcess(repo, ["identity"]) as triton:
        httpx.post(f"{triton.http_url}/v2/models/identity/infer", json=...)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from modelpool.devcluster.processes import LocalProcess
from modelpool.devcluster.toolchain import cache_dir

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
_LOG_TAIL_CHARS = 4000


def _pytriton_package_dir() -> Path:
    """Folder of the installed ``pytriton`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "nvidia-pytriton is not installed: install the project's 'triton' extra "
            "(pip install 'modelpool[triton]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def tritonserver_root() -> Path:
    """The wheel's ``tritonserver`` folder (``bin/``, ``lib/``, ``backends/``, ``python_backend_stubs/``)."""
    root = _pytriton_package_dir() / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise RuntimeError(f"no tritonserver binary under {root}/bin: is nvidia-pytriton installed whole?")
    return root


def _wheel_libs_dir() -> Path:
    """The wheel's bundled shared libraries (``site-packages/nvidia_pytriton.libs``)."""
    return _pytriton_package_dir().parent / "nvidia_pytriton.libs"


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _stub_source() -> Path:
    stub = tritonserver_root() / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"the wheel has no Python backend stub for Python {_python_tag()} ({stub})")
    return stub


def prepare_backends(dest: Path | None = None) -> Path:
    """Return a backends folder whose ``python/`` holds the stub for this interpreter.

    The wheel's ``backends`` folder is copied once to ``dest`` (default: a cache folder keyed
    by the wheel location and the Python version); later calls reuse it.
    """
    source = tritonserver_root()
    if dest is None:
        key = hashlib.sha256(f"{source}|{sys.executable}".encode()).hexdigest()[:12]
        dest = cache_dir() / "triton-backends" / f"py{_python_tag()}-{key}"
    stamp = dest / ".modelpool-ready"
    if stamp.is_file():
        return dest
    # Copied beside ``dest`` (never in TMPDIR, maybe another filesystem), then renamed into place.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".backends-", dir=dest.parent))
    try:
        shutil.rmtree(tmp)
        shutil.copytree(source / "backends", tmp, symlinks=True)
        target = tmp / "python" / "triton_python_backend_stub"
        shutil.copy2(_stub_source(), target)
        target.chmod(0o755)
        (tmp / ".modelpool-ready").write_text(str(source))
        if dest.exists():  # a half-made folder from an interrupted run, or a concurrent winner
            if (dest / ".modelpool-ready").is_file():
                return dest
            shutil.rmtree(dest)
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / ".modelpool-ready").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


PORT_RETRIES = 3
"""How many more times :meth:`TritonProcess.start` tries when a port it picked was taken."""
_PORT_TAKEN = "already in use"  # tritonserver's words for a port it cannot bind (HTTP, GRPC, metrics)


class PortTaken(RuntimeError):
    """tritonserver exited while starting because a port it was given was taken."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``tritonserver`` and its Python stubs (PATH and LD_LIBRARY_PATH set as needed)."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "/usr/bin:/bin")])
    libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(_wheel_libs_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    return env


def _shm_regions() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIX)}


def _regions_mapped_by_group(pgid: int) -> set[str]:
    """Python-backend shm regions mapped by any process in process group ``pgid``."""
    found: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            maps = (proc / "maps").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in maps.splitlines():
            idx = line.find(f"{SHM_DIR}/{SHM_PREFIX}")
            if idx >= 0:
                found.add(Path(line[idx:].split()[0]).name)
    return found


def _http_get_status(host: str, port: int, path: str, timeout: float = 1.0) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class TritonProcess(LocalProcess):
    """One ``tritonserver`` process with explicit model control on ports of its own.

    ``start()`` blocks until the server and each requested model are ready (or raises
    ``RuntimeError`` with the tail of the server log); ``stop()`` ends it by PID (Triton waits
    ``exit_timeout`` seconds for open client connections after SIGINT) and removes
    the Python-backend shared-memory regions it leaked.
    """

    def __init__(
        self,
        model_repository: Path,
        models: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 90.0,
        log_path: Path | None = None,
        cpu_affinity: set[int] | None = None,
        exit_timeout: int = 3,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models) or sorted(
            p.name for p in self.model_repository.iterdir() if (p / "config.pbtxt").is_file()
        )
        self.host = host
        self._picked_ports = not (http_port or grpc_port or metrics_port)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.cpu_affinity = cpu_affinity
        self.exit_timeout = exit_timeout
        self.command_prefix = list(command_prefix)  # e.g. ``ip netns exec NAME`` (it execs: same PID)
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None
        self._own_shm: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The ``tritonserver`` command line this process runs."""
        cmd = [
            *self.command_prefix,
            str(tritonserver_root() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={prepare_backends()}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            # how long SIGINT waits for in-flight requests and open client connections (default 30 s)
            f"--exit-timeout-secs={self.exit_timeout}",
            *self.extra_args,
        ]
        return cmd

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _ready(self) -> bool:
        try:
            if _http_get_status(self.host, self.http_port, "/v2/health/ready") != 200:
                return False
            return all(
                _http_get_status(self.host, self.http_port, f"/v2/models/{m}/ready") == 200
                for m in self.models
            )
        except OSError:
            return False

    def start(self) -> TritonProcess:
        """Launch the server and wait until it and every requested model are ready.

        Ports this object picked itself (:func:`free_port`: free a moment before, not reserved)
        can be taken by another process before tritonserver binds them; such a start is tried
        again on newly picked ports, at most :data:`PORT_RETRIES` times. Ports the caller gave
        are never changed."""
        for attempt in range(PORT_RETRIES + 1):
            try:
                return self._start_once()
            except PortTaken:
                if not self._picked_ports or attempt == PORT_RETRIES:
                    raise
                logger.info("tritonserver's port was taken before it bound it: trying new ports")
                self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> TritonProcess:
        if self._proc is not None:
            raise RuntimeError("this TritonProcess was already started")
        affinity = self.cpu_affinity

        def _preexec() -> None:  # runs in the child before exec
            os.setsid()
            if affinity:
                os.sched_setaffinity(0, affinity)

        try:
            cmd = self.command()
            logger.info("starting %s", " ".join(cmd))
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=triton_environment(),
                    preexec_fn=_preexec,
                )
            self._wait_ready()
        except BaseException:  # a failed start, Ctrl-C: nothing outlives it (own session, own shm)
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._leader_exited(0):
                tail = self.log_tail()
                self._signal_group(signal.SIGKILL)  # its stubs, while the group is still ours
                code = self._proc.wait()
                kind = PortTaken if _PORT_TAKEN in tail else RuntimeError
                raise kind(f"tritonserver exited with code {code} while starting:\n{tail}")
            if self._ready():
                self._note_own_shm()
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"tritonserver not ready within {self.startup_timeout:.0f}s (models {self.models}):\n"
            f"{self.log_tail()}"
        )

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the server's process group while it is ours: until the leader is reaped (a
        zombie at worst), its PID, the group's ID, cannot name another group."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _leader_exited(self, timeout: float) -> bool:
        """Whether the server exited within ``timeout`` s, without reaping it (its group stays ours)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.returncode is not None:
                return True
            try:
                if os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return True
            except ChildProcessError:  # reaped by someone else
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self, grace: float = 10.0) -> None:
        """SIGINT, then SIGTERM, then SIGKILL (each to the process group); then remove leaked shm.
        Stopping again does nothing more."""
        proc = self._proc
        if proc is not None:
            self._note_own_shm()
            for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
                if self._leader_exited(0):
                    break
                self._signal_group(sig)
                if self._leader_exited(wait):
                    break
            # The stubs are in the server's process group; make sure none outlives it.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
            self._proc = None
        self._remove_leaked_shm()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def terminate(self) -> None:
        """SIGTERM the server alone: Triton then finishes what is in flight and exits once no
        client connection is open, or after ``exit_timeout`` (exit code 1) while one still is."""
        self._note_own_shm()
        super().terminate()

    def kill(self) -> None:
        """SIGKILL the server (and its stubs) at once, as a crash would; shm is left for ``stop()``."""
        self._note_own_shm()
        self._signal_group(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5.0)

    def _note_own_shm(self) -> None:
        """Remember the shm regions this server's process group maps (called while it runs)."""
        if self._proc is not None and self._proc.returncode is None:
            self._own_shm |= _regions_mapped_by_group(self._proc.pid)

    def _remove_leaked_shm(self) -> None:
        for name in self._own_shm & _shm_regions():
            with contextlib.suppress(FileNotFoundError):
                (SHM_DIR / name).unlink()

    @property
    def shm_regions(self) -> set[str]:
        """Names of the Python-backend shm regions seen mapped by this server so far."""
        return set(self._own_shm)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
