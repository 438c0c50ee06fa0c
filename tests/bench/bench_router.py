"""Router benchmark: direct Triton vs nginx vs the ModelPool router, side by side, one run.

    python tests/bench/bench_router.py [--out out/bench_router] [--duration 5] [--rounds 3] [--pin]

Part 1 (proxy overhead, the ``identity`` FP32 [1,16] Python-backend model):
  * fixed rates (open loop, one asyncio process) of 200, 500 and 1,000 req/s, ``--duration``
    seconds each, targets interleaved A B C A B C ... (direct, nginx, router) for ``--rounds``
    rounds; medians over rounds of p50/p90/p99 and of the latency each proxy adds
    (its percentile minus direct's in the same round), router and nginx CPU from /proc;
  * max throughput with 16 keep-alive connections (wrk), interleaved the same way.
Part 2 (mode costs, echo_small/echo_large): router weighted vs tiered vs cascade (draft kept)
vs cascade (escalated) at 200 req/s, with direct calls to the small and large models.

Writes ``results.json`` and ``report.md`` under ``--out`` and prints the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_load import Nginx, RunResult, median, open_loop, wrk_throughput

from modelpool.devcluster.triton import TritonProcess
from modelpool.routing.config import RouterConfig, parse_config
from modelpool.routing.process import RouterProcess

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "triton_models"
JSON = [(b"content-type", b"application/json")]
IDENTITY_BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [float(i) for i in range(16)]}
        ]
    }
)
SHORT = "card lost"
LONG = "why was my transfer of 1,250 EUR reversed after three days, and when will it be refunded?"


def text_body(text: str) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    ).encode()


def router_config(
    url: str, mode: str, variants: list[dict[str, Any]], model_name: str, **extra: Any
) -> RouterConfig:
    return parse_config(
        {"generation": 1, "pool": "bench", "mode": mode, "modelName": model_name,
         "variants": [{**v, "endpoints": [url]} for v in variants], **extra}
    )  # fmt: skip


def run_rate(
    url: str, path: str, body: bytes, rate: float, duration: float, cpu: Callable[[], float] | None
) -> RunResult:
    async def go() -> RunResult:
        await open_loop(url, path, body, rate, min(0.3, duration), JSON)  # warm-up, discarded
        before = cpu() if cpu else None
        result = await open_loop(url, path, body, rate, duration, JSON)
        if cpu is not None and before is not None:
            result.cpu_seconds = cpu() - before
        return result

    try:
        import uvloop

        return uvloop.run(go())
    except ImportError:
        return asyncio.run(go())


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def proxy_overhead(args: argparse.Namespace, report: list[str], results: dict[str, Any]) -> None:
    triton = TritonProcess(MODELS, ["identity"], cpu_affinity=args.triton_cpus).start()
    identity = {"name": "identity", "tier": "large", "tritonModel": "identity", "weight": 1, "cost": 1}
    config = router_config(triton.http_url, "weighted", [identity], "identity")
    router = RouterProcess(config, cpu_affinity=args.proxy_cpus).start()
    nginx = Nginx(triton.http_port, cpu_affinity=args.proxy_cpus).start()
    path = "/v2/models/identity/infer"
    targets: dict[str, tuple[str, Callable[[], float] | None]] = {
        "direct": (triton.http_url, None),
        "nginx": (nginx.url, nginx.cpu_seconds),
        "router": (router.url, router.cpu_seconds),
    }
    try:
        rate_rows: dict[str, Any] = {}
        for rate in args.rates:
            rounds: dict[str, list[RunResult]] = {t: [] for t in targets}
            for _ in range(args.rounds):
                for name, (url, cpu) in targets.items():
                    rounds[name].append(run_rate(url, path, IDENTITY_BODY.encode(), rate, args.duration, cpu))
            rate_rows[str(rate)] = summarize_rate(rounds)
        results["rates"] = rate_rows
        throughput: dict[str, list[float]] = {t: [] for t in targets}
        errors: dict[str, int] = {t: 0 for t in targets}
        for _ in range(args.rounds):
            for name, (url, _) in targets.items():
                rps, bad = wrk_throughput(url + path, IDENTITY_BODY, args.connections, args.tp_duration)
                throughput[name].append(rps)
                errors[name] += bad
        results["throughput"] = {
            t: {"rounds": v, "median": median(v), "non2xx": errors[t]} for t, v in throughput.items()
        }
    finally:
        nginx.stop()
        router.stop()
        triton.stop()
    render_overhead(args, report, results)


def summarize_rate(rounds: dict[str, list[RunResult]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in rounds.items():
        out[name] = {
            "p50": median([r.pct(50) for r in runs]),
            "p90": median([r.pct(90) for r in runs]),
            "p99": median([r.pct(99) for r in runs]),
            "errors": sum(r.errors for r in runs),
            "sent": sum(r.sent for r in runs),
            "generator_late_p99_ms": median([r.late_ms_p99 for r in runs]),
            "cpu_percent": median(
                [100 * r.cpu_seconds / r.duration_s for r in runs if r.cpu_seconds is not None]
            )
            if runs[0].cpu_seconds is not None
            else None,
            "cpu_us_per_request": median(
                [1e6 * r.cpu_seconds / r.sent for r in runs if r.cpu_seconds is not None]
            )
            if runs[0].cpu_seconds is not None
            else None,
        }
    direct = rounds["direct"]
    for name in ("nginx", "router"):
        for q in (50, 90, 99):
            added = [p.pct(q) - d.pct(q) for p, d in zip(rounds[name], direct, strict=True)]
            out[name][f"added_p{q}"] = median(added)
    return out


def render_overhead(args: argparse.Namespace, report: list[str], results: dict[str, Any]) -> None:
    report.append(
        f"## Proxy overhead: identity FP32 [1,16], {args.rounds} interleaved rounds x {args.duration} s\n"
    )
    report.append(_row(["rate", "target", "p50 ms", "p90 ms", "p99 ms", "added p50", "added p90", "added p99",
                        "CPU % core", "CPU us/req", "errors"]))  # fmt: skip
    report.append(_row(["---"] * 11))
    for rate, rows in results["rates"].items():
        for name, r in rows.items():
            cpu = f"{r['cpu_percent']:.1f}" if r["cpu_percent"] is not None else "-"
            cpu_req = f"{r['cpu_us_per_request']:.0f}" if r["cpu_us_per_request"] is not None else "-"
            added = [f"{r[f'added_p{q}']:.3f}" if f"added_p{q}" in r else "-" for q in (50, 90, 99)]
            pcts = [f"{r[k]:.3f}" for k in ("p50", "p90", "p99")]
            report.append(_row([rate, name, *pcts, *added, cpu, cpu_req, f"{r['errors']}/{r['sent']}"]))
    report.append("")
    report.append(_row(["rate", "router added p90 / nginx added p90", "router added p90 (ms)", "target"]))
    report.append(_row(["---"] * 4))
    for rate, rows in results["rates"].items():
        nginx_added = rows["nginx"]["added_p90"]
        ratio = (
            f"{rows['router']['added_p90'] / nginx_added:.2f}"
            if nginx_added > 0
            else "n/a (nginx added <= 0)"
        )
        target = "<= 2x nginx" if float(rate) < 1000 else "< 1 ms"
        report.append(_row([rate, ratio, f"{rows['router']['added_p90']:.3f}", target]))
    tp = results["throughput"]
    report.append(
        f"\n## Max throughput, wrk, {args.connections} connections, "
        f"{args.rounds} rounds x {args.tp_duration} s\n"
    )
    report.append(_row(["target", "median req/s", "rounds", "non-2xx", "vs nginx"]))
    report.append(_row(["---"] * 5))
    for name, r in tp.items():
        each = ", ".join(f"{x:.0f}" for x in r["rounds"])
        vs_nginx = f"{r['median'] / tp['nginx']['median']:.2f}x"
        report.append(_row([name, f"{r['median']:.0f}", each, str(r["non2xx"]), vs_nginx]))
    report.append("")


def mode_costs(args: argparse.Namespace, report: list[str], results: dict[str, Any]) -> None:
    triton = TritonProcess(MODELS, ["echo_small", "echo_large"], cpu_affinity=args.triton_cpus).start()
    variants = [
        {"name": "small", "tier": "small", "tritonModel": "echo_small", "weight": 1, "cost": 1},
        {"name": "large", "tier": "large", "tritonModel": "echo_large", "weight": 0, "cost": 10},
    ]
    cascade = {"draft": "small", "verifier": "large", "acceptThreshold": 0.7}
    tiers = [{"maxComplexity": 0.5, "target": "small"}, {"maxComplexity": 1.0, "target": "large"}]
    routers = {
        "weighted": RouterProcess(router_config(triton.http_url, "weighted", variants, "intents")).start(),
        "tiered": RouterProcess(
            router_config(triton.http_url, "tiered", variants, "intents", tiers=tiers)
        ).start(),
        "cascade": RouterProcess(
            router_config(triton.http_url, "cascade", variants, "intents", cascade=cascade)
        ).start(),
    }
    pool_path = "/v2/models/intents/infer"

    def via(name: str, router: str, text: str) -> tuple[str, str, str, bytes, Callable[[], float] | None]:
        return (name, routers[router].url, pool_path, text_body(text), routers[router].cpu_seconds)

    cases: list[tuple[str, str, str, bytes, Callable[[], float] | None]] = [
        ("direct small", triton.http_url, "/v2/models/echo_small/infer", text_body(SHORT), None),
        ("direct large", triton.http_url, "/v2/models/echo_large/infer", text_body(LONG), None),
        via("router weighted (small)", "weighted", SHORT),
        via("router tiered (scored -> small)", "tiered", SHORT),
        via("router cascade, draft kept", "cascade", SHORT),
        via("router cascade, escalated", "cascade", LONG),
    ]
    rate = args.mode_rate
    try:
        runs: dict[str, list[RunResult]] = {c[0]: [] for c in cases}
        for _ in range(args.rounds):
            for name, url, path, body, cpu in cases:
                runs[name].append(run_rate(url, path, body, rate, args.duration, cpu))
    finally:
        for r in routers.values():
            r.stop()
        triton.stop()
    rows = {}
    for name, rs in runs.items():
        rows[name] = {
            "p50": median([r.pct(50) for r in rs]),
            "p90": median([r.pct(90) for r in rs]),
            "errors": sum(r.errors for r in rs),
            "cpu_us_per_request": median(
                [1e6 * r.cpu_seconds / r.sent for r in rs if r.cpu_seconds is not None]
            )
            if rs[0].cpu_seconds is not None
            else None,
        }
    results["modes"] = rows
    base = rows["router weighted (small)"]
    report.append(
        f"## Mode costs at {rate:.0f} req/s, echo models, {args.rounds} rounds x {args.duration} s\n"
    )
    report.append(_row(["path", "p50 ms", "p90 ms", "p50 vs router weighted", "router CPU us/req", "errors"]))
    report.append(_row(["---"] * 6))
    for name, r in rows.items():
        cpu = f"{r['cpu_us_per_request']:.0f}" if r["cpu_us_per_request"] is not None else "-"
        delta = f"{r['p50'] - base['p50']:+.3f}" if name.startswith("router") else "-"
        report.append(_row([name, f"{r['p50']:.3f}", f"{r['p90']:.3f}", delta, cpu, str(r["errors"])]))
    report.append("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench_router"))
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[200.0, 500.0, 1000.0]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per fixed-rate run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tp-duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--mode-rate", type=float, default=200.0)
    parser.add_argument("--skip-modes", action="store_true")
    parser.add_argument(
        "--pin", action="store_true", help="Triton on CPU 0; proxies, load generator and wrk on the others"
    )
    args = parser.parse_args(argv)
    args.triton_cpus = args.proxy_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        args.triton_cpus, args.proxy_cpus = {cpus[0]}, set(cpus[1:])
        os.sched_setaffinity(0, args.proxy_cpus)  # the load generator and wrk (a child) too
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    report = [
        f"# Router benchmark ({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start, pinned: {args.pin})\n"
    ]
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    proxy_overhead(args, report, results)
    if not args.skip_modes:
        mode_costs(args, report, results)
    text = "\n".join(report)
    (args.out / "report.md").write_text(text)
    (args.out / "results.json").write_text(
        json.dumps(results, indent=2, default=lambda o: float(np.float64(o)))
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
