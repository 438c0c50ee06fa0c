"""Helpers for bench_router.py: an open-loop load generator, wrk, nginx, statistics.

Every target is on 127.0.0.1; every run is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelpool.devcluster.processes import cpu_seconds
from modelpool.devcluster.triton import free_port
from modelpool.routing.upstream import EndpointClient, UpstreamError

NGINX = "/usr/sbin/nginx"


@dataclass
class RunResult:
    """One fixed-rate run against one target."""

    target: str
    rate: float
    sent: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    late_ms_p99: float = 0.0  # how late the generator sent (its own jitter), p99
    cpu_seconds: float | None = None
    duration_s: float = 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def open_loop(
    url: str, path: str, body: bytes, rate: float, duration: float, headers: list[tuple[bytes, bytes]]
) -> RunResult:
    """Send ``rate`` requests per second for ``duration`` seconds on a schedule (open loop).

    Latency is measured from the moment a request is written to the moment its response is
    parsed; requests go out on schedule whether or not earlier ones came back.
    """
    loop = asyncio.get_running_loop()
    client = EndpointClient(url, max_idle=512)
    n = int(rate * duration)
    result = RunResult(target=url, rate=rate, sent=n)
    late: list[float] = []
    start = loop.time() + 0.01

    async def one() -> None:
        t = time.perf_counter()  # uvloop's loop.time() has only millisecond resolution
        try:
            resp = await client.request(b"POST", path.encode(), headers, body, 5.0)
            if resp.status == 200:
                result.latencies_ms.append((time.perf_counter() - t) * 1000)
            else:
                result.errors += 1
        except UpstreamError:
            result.errors += 1

    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        late.append(max(0.0, loop.time() - due) * 1000)
        tasks.append(loop.create_task(one()))
    await asyncio.gather(*tasks)
    result.duration_s = loop.time() - start
    result.late_ms_p99 = float(np.percentile(late, 99)) if late else 0.0
    client.close()
    return result


def wrk_throughput(
    url: str, body: str, connections: int, duration: int, threads: int = 1
) -> tuple[float, int]:
    """Requests/s and non-2xx count from ``wrk`` (closed loop, ``connections`` keep-alive connections)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body_lua = body.replace("\\", "\\\\").replace('"', '\\"')
        script.write(f'wrk.method = "POST"\nwrk.body = "{body_lua}"\n')
        script.write('wrk.headers["Content-Type"] = "application/json"\n')
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", script.name, url],
            capture_output=True, text=True, timeout=duration + 30, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return rps, int(bad.group(1)) if bad else 0


class Nginx:
    """Debian's nginx as a reference reverse proxy: 1 worker, upstream keepalive, on 127.0.0.1."""

    def __init__(
        self, upstream_port: int, port: int | None = None, cpu_affinity: set[int] | None = None
    ) -> None:
        self.port = port or free_port()
        self.cpu_affinity = cpu_affinity
        self.upstream_port = upstream_port
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        d = self.dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""{user}worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  client_max_body_size 8m;
  upstream triton {{ server 127.0.0.1:{self.upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://triton;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
}}
"""

    def start(self) -> Nginx:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        affinity = self.cpu_affinity
        self._proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, affinity)) if affinity else None,
        )  # fmt: skip
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        """CPU of the master and its worker (same session)."""
        assert self._proc is not None
        total = 0.0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self._proc.pid:  # session id field
                    total += cpu_seconds(int(proc.name))
            except OSError:
                continue
        return total

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")
