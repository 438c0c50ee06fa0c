"""The shared Triton launcher against the real ``tritonserver`` from the nvidia-pytriton wheel."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from modelpool.devcluster.triton import SHM_DIR, TritonProcess, free_port, prepare_backends, tritonserver_root

pytestmark = pytest.mark.triton

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_models"


def _text_input(texts: list[str]) -> triton_http.InferInput:
    tensor = triton_http.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    return tensor


def test_wheel_layout_and_backends() -> None:
    root = tritonserver_root()
    assert (root / "bin" / "tritonserver").is_file()
    backends = prepare_backends()
    assert os.access(backends / "python" / "triton_python_backend_stub", os.X_OK)
    assert prepare_backends() == backends  # cached
    port = free_port()
    assert 1024 <= port <= 65535


def test_start_infer_stop_leaves_nothing() -> None:
    triton = TritonProcess(MODELS, ["echo_small", "echo_large", "identity"])
    with triton:
        pid = triton.pid
        assert pid is not None
        assert triton.running
        assert httpx.get(f"{triton.http_url}/v2/health/ready").status_code == 200
        client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
        short, long_text = "pay my bill", "x" * 80
        small = client.infer("echo_small", [_text_input([short, long_text])])
        large = client.infer("echo_large", [_text_input([short, long_text])])
        small_p, large_p = small.as_numpy("PROBABILITIES"), large.as_numpy("PROBABILITIES")
        assert small_p.shape == (2, 4)
        assert small_p.dtype == np.float32
        assert small_p.max(axis=1) == pytest.approx([0.95, 0.4])
        assert large_p.max(axis=1) == pytest.approx([0.9, 0.9])
        assert (small.as_numpy("LABEL") == large.as_numpy("LABEL")).all()
        assert small.as_numpy("LABEL").dtype == np.int64
        data = np.arange(32, dtype=np.float32).reshape(2, 16)
        ident = triton_http.InferInput("INPUT0", [2, 16], "FP32")
        ident.set_data_from_numpy(data)
        assert (client.infer("identity", [ident]).as_numpy("OUTPUT0") == data).all()
        metrics = httpx.get(triton.metrics_url).text
        assert 'nv_inference_request_success{model="echo_small"' in metrics
        regions = triton.shm_regions
        assert regions, "the Python backend maps shm regions while running"
        client.close()
    assert not triton.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not any((SHM_DIR / name).exists() for name in regions)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{triton.http_url}/v2/health/live", timeout=1.0)


def test_kill_then_stop_cleans_shm() -> None:
    triton = TritonProcess(MODELS, ["identity"]).start()
    regions = triton.shm_regions
    triton.kill()
    assert not triton.running
    triton.stop()
    assert regions
    assert not any((SHM_DIR / name).exists() for name in regions)


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise SystemExit('this model cannot load')\n")
    triton = TritonProcess(tmp_path, ["broken"], startup_timeout=30)
    with pytest.raises(RuntimeError, match="broken"):
        triton.start()
    assert not triton.running
