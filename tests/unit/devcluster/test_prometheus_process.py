"""PrometheusProcess with a stand-in binary (no Prometheus runs): what an interrupted start leaves."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from modelpool.devcluster import prometheus
from modelpool.devcluster.prometheus import PrometheusProcess


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_start_stops_prometheus_and_removes_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    binary = tmp_path / "prometheus"
    binary.write_text("#!/bin/sh\nexec sleep 60\n")
    binary.chmod(0o755)
    prom = PrometheusProcess({"triton": ["127.0.0.1:9"]}, binary=binary, startup_timeout=30)
    seen: list[tuple[int, Path]] = []

    def get_status(port: int, path: str) -> int:
        assert prom.pid is not None and prom.log_path is not None
        seen.append((prom.pid, prom.log_path.parent))
        raise error("interrupted while waiting")

    monkeypatch.setattr(prometheus, "_get_status", get_status)
    try:
        with pytest.raises(error):
            prom.start()
        assert seen
        pid, folder = seen[0]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not folder.exists()
    finally:
        for pid, _ in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        prom.stop()
