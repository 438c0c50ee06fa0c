"""The dev Prometheus launcher: real /usr/bin/prometheus, start/stop by PID, clear failures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest

from modelpool.devcluster.prometheus import PrometheusProcess

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]


def test_start_scrapes_itself_and_stop_removes_everything() -> None:
    prom = PrometheusProcess({"self": []}, scrape_interval_s=1.0)
    prom.jobs["self"] = [f"127.0.0.1:{prom.port}"]  # scrape its own /metrics
    prom.start()
    pid, folder = prom.pid, prom.log_path.parent if prom.log_path else None
    try:
        body = httpx.get(f"{prom.url}/api/v1/query", params={"query": 'up{job="self"}'}).json()
        assert body["data"]["result"][0]["value"][1] == "1"
    finally:
        prom.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert folder is not None
    assert not folder.exists()


def test_port_in_use_fails_with_log_tail() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        prom = PrometheusProcess({"x": ["127.0.0.1:1"]}, port=busy.getsockname()[1], startup_timeout=20.0)
        with pytest.raises(RuntimeError, match="address already in use"):
            prom.start()
    assert prom.pid is None


def test_missing_binary_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install --no-install-recommends prometheus"):
        PrometheusProcess({"x": ["127.0.0.1:1"]}, binary=tmp_path / "prometheus")
