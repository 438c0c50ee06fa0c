"""Measure the service time of the token-proportional toy LM on the real tritonserver.

Runs ``tests/bench/autoscaling_models/token_lm`` (Python backend) in a real ``tritonserver`` from
the nvidia-pytriton wheel, sends one request at a time (no queueing) over a grid of context and
generated token counts, and fits ``service = base + a*context + b*generated`` by least squares.
The fit and every measured point are written as JSON; the autoscaling benchmark reads it.

    python tests/bench/autoscaling_calibration.py --out out/autoscaling/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from modelpool.devcluster.triton import TritonProcess
from modelpool.scaling.simulator import ServiceModel

MODELS = Path(__file__).resolve().parent / "autoscaling_models"
# One BLAS thread in the model's stub: one model instance is one server in the queueing model, and
# multi-threaded BLAS on a shared 2-core machine made the tiny decode steps 3-7x slower (measured).
SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def single_threaded_blas() -> None:
    """Make tritonserver (started after this) run its Python stubs with one BLAS thread."""
    for key, value in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(key, value)


CONTEXT_GRID = (32, 512, 1500, 3000, 6000)
GENERATED_GRID = (1, 16, 64, 200)


def _text(context: int, generated: int) -> str:
    return " ".join([str(generated), *(f"t{i % 500}" for i in range(context))])


def _infer(client: httpx.Client, url: str, text: str) -> float:
    body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}
    start = time.perf_counter()
    response = client.post(f"{url}/v2/models/token_lm/infer", json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed


def calibrate(repeats: int = 5) -> dict[str, object]:
    """Start tritonserver, measure the grid, stop it; return the fit and the raw points."""
    points: list[dict[str, float]] = []
    single_threaded_blas()
    server = TritonProcess(MODELS, ["token_lm"])
    started = time.perf_counter()
    server.start()
    startup_s = time.perf_counter() - started  # process launch -> server and model ready
    try:
        with httpx.Client(timeout=60.0) as client:
            for _ in range(3):  # warm-up
                _infer(client, server.http_url, _text(64, 4))
            for context in CONTEXT_GRID:
                for generated in GENERATED_GRID:
                    text = _text(context, generated)
                    samples = [_infer(client, server.http_url, text) for _ in range(repeats)]
                    points.append(
                        {"context": context, "generated": generated, "seconds": statistics.median(samples)}
                    )
    finally:
        server.stop()
    design = np.array([[1.0, p["context"], p["generated"]] for p in points])
    target = np.array([p["seconds"] for p in points])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    predicted = design @ coef
    rel_err = float(np.median(np.abs(predicted - target) / target))
    model = ServiceModel(max(float(coef[0]), 0.0), max(float(coef[1]), 0.0), max(float(coef[2]), 0.0))
    return {
        "model": "token_lm (hidden 512, 4 layers; prefill over context, one decode step per token)",
        "blas_threads": {k: os.environ.get(k) for k in SINGLE_THREAD_ENV},
        "base_s": model.base_s,
        "per_context_token_s": model.per_context_token_s,
        "per_generated_token_s": model.per_generated_token_s,
        "median_relative_fit_error": rel_err,
        "startup_s": startup_s,
        "points": points,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_service_model(path: Path) -> tuple[ServiceModel, float]:
    """Read a calibration JSON written by :func:`calibrate`: the service model and start-up seconds."""
    data = json.loads(path.read_text())
    model = ServiceModel(data["base_s"], data["per_context_token_s"], data["per_generated_token_s"])
    return model, float(data["startup_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/autoscaling/calibration.json"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = calibrate(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=2))


if __name__ == "__main__":
    main()
