"""Start and stop a real Prometheus (Debian's ``/usr/bin/prometheus``) on 127.0.0.1 for dev and tests.

    with PrometheusProcess({"triton": ["127.0.0.1:8002"]}, scrape_interval_s=1.0) as prom:
        httpx.get(f"{prom.url}/api/v1/query", params={"query": "up"})

The configuration (static targets per job, one scrape interval, and per job the target labels to
attach, as ``labels``) and the TSDB live in a temporary folder removed on ``stop()``. A static job
attaches no ``namespace``, ``modelpool_dev_pool`` or ``modelpool_dev_variant`` label unless given
one: the scaler then counts its Triton series for every variant of their model name (the chart's
PodMonitor attaches them from each pod; ``labels`` does the same for a local Triton).
``start()`` waits for ``/-/ready`` with a deadline and raises ``RuntimeError`` with the log tail
if it is not ready in time; ``stop()`` ends the process by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from modelpool.devcluster.processes import LocalProcess, stop_process
from modelpool.devcluster.triton import free_port

DEFAULT_BINARY = Path("/usr/bin/prometheus")


def prometheus_config(
    jobs: Mapping[str, Sequence[str]],
    scrape_interval_s: float,
    metrics_path: str = "/metrics",
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, object]:
    """The ``prometheus.yml`` content: one static job per entry of ``jobs`` (``host:port`` targets),
    with the target labels ``labels`` names for the job (e.g. ``{"modelpool_dev_pool": "chat",
    "modelpool_dev_variant": "small", "namespace": "prod"}``, as the chart's PodMonitors attach)."""
    interval = f"{int(scrape_interval_s * 1000)}ms"
    for job, targets in jobs.items():
        for target in targets:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"job {job!r}: target {target!r} must be host:port, e.g. 127.0.0.1:8002")
    for job in labels or {}:
        if job not in jobs:
            raise ValueError(f"labels for job {job!r}, which is not one of the jobs {sorted(jobs)}")

    def group(job: str) -> dict[str, object]:
        attached = dict((labels or {}).get(job, {}))
        return {"targets": list(jobs[job]), **({"labels": attached} if attached else {})}

    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": metrics_path, "static_configs": [group(job)]} for job in jobs
        ],
    }


def _get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


class PrometheusProcess(LocalProcess):
    """One Prometheus server bound to 127.0.0.1 on a free port, scraping the given targets."""

    def __init__(
        self,
        jobs: Mapping[str, Sequence[str]],
        *,
        scrape_interval_s: float = 1.0,
        port: int | None = None,
        binary: Path = DEFAULT_BINARY,
        startup_timeout: float = 30.0,
        metrics_path: str = "/metrics",
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not binary.exists():
            raise FileNotFoundError(
                f"prometheus binary {binary} not found; install it with "
                "`apt-get install --no-install-recommends prometheus`"
            )
        if scrape_interval_s <= 0:
            raise ValueError(f"scrape_interval_s={scrape_interval_s} must be > 0")
        self.jobs = {job: list(targets) for job, targets in jobs.items()}
        self.scrape_interval_s = scrape_interval_s
        self.port = port or free_port()
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.metrics_path = metrics_path
        self.labels = {job: dict(attached) for job, attached in (labels or {}).items()}
        prometheus_config(self.jobs, scrape_interval_s, metrics_path, self.labels)  # refuse bad input now
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:9090``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """The server's combined stdout/stderr log while it exists."""
        return self._dir / "prometheus.log" if self._dir is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server log (empty when there is none)."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-chars:]

    def _targets_scraped(self) -> bool:
        """True once every configured target is active and was scraped at least once.

        Prometheus hands discovered targets to the scrapers only every 5 s, so ``/-/ready`` alone
        comes well before the first sample.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("GET", "/api/v1/targets?state=active")
            body = json.loads(conn.getresponse().read())
        except (OSError, ValueError):
            return False
        finally:
            conn.close()
        active = body.get("data", {}).get("activeTargets", [])
        expected = sum(len(t) for t in self.jobs.values())
        return len(active) >= expected and all(t.get("health") != "unknown" for t in active)

    def start(self) -> PrometheusProcess:
        """Write the config, launch the server, and wait until it is ready and every target was scraped.

        A target that is down still counts as scraped (its ``up`` is 0); the deadline covers it all.
        """
        if self._proc is not None:
            raise RuntimeError("Prometheus already started")
        self._dir = Path(tempfile.mkdtemp(prefix="modelpool-prometheus-"))
        try:
            self._launch(self._dir)
            self._wait_ready()
        except BaseException:  # a failed start, Ctrl-C: no server (own session) or folder outlives it
            self.stop()
            raise
        return self

    def _launch(self, folder: Path) -> None:
        config = folder / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                prometheus_config(self.jobs, self.scrape_interval_s, self.metrics_path, self.labels)
            )
        )
        command = [
            str(self.binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with (folder / "prometheus.log").open("wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"prometheus exited with code {code}:\n{self.log_tail()}")
            if _get_status(self.port, "/-/ready") == 200 and self._targets_scraped():
                return
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {self.startup_timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL after ``grace`` seconds; remove the temporary folder."""
        stop_process(self._proc, grace)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
