"""Check the simulator against the real tritonserver: replay a trace segment on one real replica.

Calibrates the service model first (under the machine's current load, unless ``--calibration`` is
given), picks the 60 s window of the trace whose request count is closest to 60% (``--load``) of one
replica's capacity (a deterministic rule), replays it open-loop at its real timing against
``token_lm`` in a real tritonserver (one instance), and simulates the same window with one replica
and the calibrated service model. Prints latency quantiles and SLO attainment side by side.

    PYTHONPATH=operator:tests/bench python tests/bench/autoscaling_validation.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from autoscaling_calibration import MODELS, calibrate, load_service_model, single_threaded_blas
from bench_autoscaling import DEFAULT_TRACE, REFERENCE_CALIBRATION

from modelpool.devcluster.triton import TritonProcess
from modelpool.scaling.baselines import StaticPolicy
from modelpool.scaling.simulator import ServiceModel, SimConfig, TraceRequest, load_trace, simulate


def pick_window(
    trace: Sequence[TraceRequest], capacity_rps: float, seconds: float = 60.0, load: float = 0.6
) -> list[TraceRequest]:
    """The ``seconds``-long window (starting on a whole second) closest to ``load``, rebased to 0."""
    target = load * capacity_rps * seconds
    horizon = int(trace[-1].arrival_s)
    best_start, best_gap = 0, float("inf")
    for start in range(0, max(1, horizon - int(seconds))):
        count = sum(1 for r in trace if start <= r.arrival_s < start + seconds)
        if abs(count - target) < best_gap:
            best_start, best_gap = start, abs(count - target)
    return [
        TraceRequest(r.arrival_s - best_start, r.context_tokens, r.generated_tokens)
        for r in trace
        if best_start <= r.arrival_s < best_start + seconds
    ]


def _text(req: TraceRequest) -> str:
    return " ".join([str(req.generated_tokens), *(f"t{i % 500}" for i in range(req.context_tokens))])


async def replay(url: str, window: Sequence[TraceRequest]) -> list[float]:
    """Open-loop replay to 127.0.0.1 at the window's timing; returns per-request latency (s).

    Request bodies are encoded before the clock starts, so the client takes as little CPU as
    possible from the server during the replay (both share the machine's cores).
    """
    latencies: list[float] = [0.0] * len(window)
    bodies = [
        json.dumps(
            {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [_text(r)]}]}
        ).encode()
        for r in window
    ]
    headers = {"content-type": "application/json"}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        start = time.perf_counter()
        response = await client.post(f"{url}/v2/models/token_lm/infer", content=bodies[i], headers=headers)
        latencies[i] = time.perf_counter() - start
        response.raise_for_status()

    limits = httpx.Limits(max_connections=len(window), max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=300.0, limits=limits) as client:
        t0 = time.perf_counter()
        tasks = []
        for i, req in enumerate(window):
            delay = t0 + req.arrival_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, i)))
        await asyncio.gather(*tasks)
    return latencies


def _summary(latencies: Sequence[float], slo: float) -> str:
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    within = sum(1 for x in ordered if x <= slo) / len(ordered)
    return (
        f"mean {statistics.fmean(ordered):6.3f}  p50 {q(0.5):6.3f}  p90 {q(0.9):6.3f}  "
        f"p99 {q(0.99):6.3f}  within {slo:g}s {within:7.2%}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help=f"calibration JSON (default: measure now, under the same machine load; "
        f"reference: {REFERENCE_CALIBRATION.name})",
    )
    parser.add_argument("--slo", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--load", type=float, default=0.6, help="mean load of the picked window")
    args = parser.parse_args(argv)
    if args.calibration is None:
        fresh = calibrate(repeats=3)
        service = ServiceModel(fresh["base_s"], fresh["per_context_token_s"], fresh["per_generated_token_s"])  # type: ignore[arg-type]
        print(f"calibrated just now: {service}")
    else:
        service = load_service_model(args.calibration)[0]
    trace = load_trace(args.trace)
    capacity = 1.0 / statistics.fmean(service.service_s(r) for r in trace)
    window = pick_window(trace, capacity, args.seconds, args.load)
    sim = simulate(window, service, SimConfig(latency_slo_s=args.slo), StaticPolicy(1))
    single_threaded_blas()
    with TritonProcess(MODELS, ["token_lm"]) as server:
        real = asyncio.run(replay(server.http_url, window))
    print(
        f"{args.trace.name}: {len(window)} requests in {args.seconds:g} s on one replica "
        f"(capacity {capacity:.2f} req/s)"
    )
    print(f"real tritonserver : {_summary(real, args.slo)}")
    print(f"simulator         : {_summary(sim.latencies_s, args.slo)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
