"""Reaction time on the real parts: a load step on a real tritonserver, scraped by a real
Prometheus, read by the operator's reader; ModelPool's decision rule against the Kubernetes HPA
algorithm on the same readings, side by side, one run.

    PYTHONPATH=operator:tests python tests/bench/bench_reaction.py [--steps 3] [--scrape 1.0]
        [--decision-interval 1.0] [--out out/bench_reaction]

Each step: ``echo_small`` (Python backend, one instance, 20 ms a request: 50 req/s) gets a paced
3 req/s for 8 s, then 60 req/s, more than one replica serves, for 20 s. The reader is polled every
0.1 s and each reading kept with its time. A policy reacts at the first of its own decision times
after the step at which it asks for a second replica; where those times fall relative to the step
is not something either policy chooses, so each step is evaluated at 50 decision phases spread
evenly over the policy's interval:

* ModelPool: ``decide`` (this repository's rule, the settings of
  ``tests/integration/scaling/test_prometheus_triton.py``) every ``--decision-interval`` seconds
  (the pool's ``intervalSeconds``; 1 s at the fast point);
* HPA: the autoscaling/v2 algorithm (``modelpool.scaling.baselines.HpaPolicy``: ratio, 10 %
  tolerance, ``ceil``) every 15 s (the controller manager's default sync period), on the same
  Prometheus rate, with a target of 70 % of one replica's measured capacity.

The issue's target: reaction within one scrape interval plus 2 s. Writes ``results.json`` and
prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.loadgen import echo_body, paced_load
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess
from modelpool.scaling import PoolInput, ScalingInput, VariantInput, VariantMetrics, VariantSettings, decide
from modelpool.scaling.prometheus_reader import PrometheusReader, VariantTarget

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "triton_models"
SERVICE_MS = 20
CAPACITY_RPS = 1000 / SERVICE_MS
LOW_RPS, LOW_S = 3.0, 8.0
HIGH_RPS, HIGH_S = 60.0, 20.0
POLL_S = 0.1
PHASES = 50
HPA_SYNC_S = 15.0
HPA_TARGET = 0.7 * CAPACITY_RPS
TARGET = VariantTarget(model="echo_small", variant="small")
SETTINGS = VariantSettings(
    name="small",
    min_replicas=1,
    max_replicas=8,
    capacity_per_replica_rps=None,  # estimated from the measured compute time, as in a cluster
    target_queue_time_s=0.1,
    stale_after_s=5.0,
    lookahead_s=3.0,
    trend_window_s=6.0,
    backlog_drain_s=0.5,
)


@dataclass(frozen=True)
class Reading:
    t: float  # seconds after the step
    metrics: VariantMetrics
    wall: float


def modelpool_wants(reading: Reading) -> int:
    vi = VariantInput(SETTINGS, reading.metrics, 1)
    return (
        decide(ScalingInput.single(PoolInput("bench", (vi,))), reading.wall)
        .pools["bench"]
        .variants[0]
        .desired_replicas
    )


def hpa_wants(reading: Reading) -> int:
    rate = reading.metrics.latest_rps
    if rate is None:
        return 1
    ratio = rate / HPA_TARGET  # one replica now
    return 1 if abs(ratio - 1.0) <= 0.1 else max(1, math.ceil(ratio))


def reaction(
    readings: list[Reading], interval_s: float, phase: float, wants: Callable[[Reading], int]
) -> float | None:
    """Seconds from the step to the first decision time (phase, phase + interval, ...) whose latest
    reading makes the policy ask for two replicas or more; None if none within the step."""
    decide_at = phase
    index = 0
    latest: Reading | None = None
    while decide_at <= readings[-1].t:
        while index < len(readings) and readings[index].t <= decide_at:
            latest = readings[index]
            index += 1
        if latest is not None and wants(latest) >= 2:
            return decide_at
        decide_at += interval_s
    return None


async def one_step(url: str, reader: PrometheusReader) -> list[Reading]:
    async def send(client: httpx.AsyncClient, i: int) -> int:
        body = echo_body(f"sleep:{SERVICE_MS}:req {i}")
        return (await client.post(f"{url}/v2/models/echo_small/infer", json=body)).status_code

    codes = await paced_load(LOW_RPS, LOW_S, send)
    step = time.monotonic()
    load = asyncio.create_task(paced_load(HIGH_RPS, HIGH_S, send))
    readings: list[Reading] = []
    while time.monotonic() - step < HIGH_S:
        metrics = await reader.read_variant(TARGET)
        readings.append(Reading(time.monotonic() - step, metrics, time.time()))
        await asyncio.sleep(POLL_S)
    codes += await load
    bad = [c for c in codes if c != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed ({sorted(set(bad))}): the step is not valid")
    await asyncio.sleep(SETTINGS.trend_window_s + 5.0)  # Triton drains, the rates fall back
    return readings


def summary(values: list[float | None], horizon: float) -> dict[str, float | int]:
    """Median, p95 and max of the reactions; a step with no reaction counts as the horizon."""
    seen = sorted(v if v is not None else horizon for v in values)
    return {
        "median_s": statistics.median(seen),
        "p95_s": seen[min(len(seen) - 1, math.ceil(0.95 * len(seen)) - 1)],
        "max_s": seen[-1],
        "none": sum(v is None for v in values),
        "n": len(values),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    with (
        TritonProcess(MODELS, ["echo_small"]) as triton,
        PrometheusProcess(
            {"triton": [f"127.0.0.1:{triton.metrics_port}"]}, scrape_interval_s=args.scrape
        ) as prom,
    ):
        reader = PrometheusReader(
            prom.url, rate_window_s=3 * args.scrape, series_span_s=10.0, step_s=args.scrape
        )
        try:
            steps = [await one_step(triton.http_url, reader) for _ in range(args.steps)]
        finally:
            await reader.aclose()
    policies = {"modelpool": (args.decision_interval, modelpool_wants), "hpa": (HPA_SYNC_S, hpa_wants)}
    results: dict[str, object] = {
        "scrape_s": args.scrape,
        "target_s": args.scrape + 2.0,
        "steps": args.steps,
        "decision_interval_s": args.decision_interval,
    }
    for name, (interval, wants) in policies.items():
        values = [
            reaction(readings, interval, interval * k / PHASES, wants)
            for readings in steps
            for k in range(PHASES)
        ]
        results[name] = summary(values, HIGH_S)
    return results


def report(results: dict[str, object]) -> str:
    target = float(results["target_s"])  # type: ignore[arg-type]
    mp, hpa = results["modelpool"], results["hpa"]
    assert isinstance(mp, dict) and isinstance(hpa, dict)
    lines = [
        f"reaction: load step (3 -> 60 req/s on one 50 req/s replica) -> first decision asking for a second "
        f"replica; real tritonserver, real Prometheus scraping every {results['scrape_s']:g} s; "
        f"{results['steps']} steps x {PHASES} decision phases",
        "",
        "| policy | decides every | median | p95 | max | no reaction | target (scrape + 2 s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row, every in (
        ("modelpool", mp, float(results["decision_interval_s"])),
        ("hpa", hpa, HPA_SYNC_S),
    ):  # type: ignore[arg-type]
        verdict = "met" if row["p95_s"] <= target else "missed"
        lines.append(
            f"| {name} | {every:g} s | {row['median_s']:.1f} s | {row['p95_s']:.1f} s | {row['max_s']:.1f} s "
            f"| {row['none']} of {row['n']} | {verdict} at p95 ({target:g} s) |"
        )
    lines.append("")
    lines.append(
        f"HPA / ModelPool: median {hpa['median_s'] / max(mp['median_s'], 1e-9):.1f}x, "
        f"p95 {hpa['p95_s'] / max(mp['p95_s'], 1e-9):.1f}x"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--scrape", type=float, default=1.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--decision-interval", type=float, default=1.0, help="ModelPool's intervalSeconds")
    parser.add_argument("--out", type=Path, default=Path("out/bench_reaction"))
    args = parser.parse_args()
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
