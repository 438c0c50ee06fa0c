"""Run a router as a separate process (``python -m modelpool.routing serve``).

For tests, benchmarks and the local dev cluster: the router gets its own interpreter and
event loop (uvloop), like a sidecar container, and its CPU can be read from ``/proc``::

    with RouterProcess(config, admin_token="t") as router:
        httpx.post(f"{router.url}/v2/models/{config.model_name}/infer", json=...)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelpool.devcluster.processes import LocalProcess, cpu_seconds, stop_process
from modelpool.devcluster.triton import free_port
from modelpool.routing.config import RouterConfig

_OPERATOR_ROOT = Path(__file__).resolve().parents[2]


class RouterProcess(LocalProcess):
    """A router subprocess serving ``config`` on 127.0.0.1 (a free port unless given)."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        port: int | None = None,
        admin_token: str | None = None,
        cpu_affinity: set[int] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.config = config
        self.port = port or free_port()
        self.admin_token = admin_token
        self.cpu_affinity = cpu_affinity
        self.startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="modelpool-router-"))
        self.config_path = self._dir / "router.json"
        self.log_path = self._dir / "router.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "modelpool.routing", "serve", "--config", str(self.config_path)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "WARNING"]
        if self.admin_token is not None:
            token_file = self._dir / "token"
            token_file.write_text(self.admin_token)
            token_file.chmod(0o600)
            cmd += ["--admin-token-file", str(token_file)]
        return cmd

    def start(self) -> RouterProcess:
        """Start it and wait for ``/v2/health/ready`` (RuntimeError with the log otherwise)."""
        self.config_path.write_text(json.dumps(self.config.to_json()))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_OPERATOR_ROOT), os.environ.get("PYTHONPATH")])),
        }
        affinity = self.cpu_affinity
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: os.sched_setaffinity(0, affinity)) if affinity else None,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        log_text = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"router did not become ready on {self.url}:\n{log_text}")

    def cpu_seconds(self) -> float:
        """CPU time the router has used so far (all threads, nanosecond counts from /proc)."""
        assert self._proc is not None
        return cpu_seconds(self._proc.pid)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL; returns the exit code."""
        return stop_process(self._proc)
