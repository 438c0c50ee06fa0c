"""``modelpool scaling ...`` commands (the lead wires :func:`register` into the main CLI)."""

from __future__ import annotations

import argparse
import asyncio
import time

from modelpool.scaling.decide import decide
from modelpool.scaling.prometheus_reader import PrometheusReader, VariantTarget
from modelpool.scaling.types import PoolInput, ScalingInput, VariantInput, VariantMetrics, VariantSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scaling inspect`` to the ``modelpool`` command line."""
    parser = subparsers.add_parser("scaling", help="autoscaling tools")
    sub = parser.add_subparsers(dest="scaling_command", required=True)
    inspect = sub.add_parser(
        "inspect", help="read one variant's live metrics from Prometheus and print the scaling decision"
    )
    inspect.add_argument(
        "--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090"
    )
    inspect.add_argument("--model", required=True, help="Triton model name of the variant")
    inspect.add_argument("--variant", help="router variant label (default: the model name)")
    inspect.add_argument("--matchers", default="", help='extra label matchers, e.g. namespace="prod"')
    inspect.add_argument("--replicas", type=int, default=1, help="current replica count")
    inspect.add_argument("--capacity", type=float, help="req/s per replica (default: from compute time)")
    inspect.add_argument("--target-queue", type=float, default=0.5, help="target queue time, s")
    inspect.add_argument("--max-replicas", type=int, default=10)
    inspect.add_argument("--rate-window", type=float, default=6.0, help="rate() window, s")
    inspect.set_defaults(func=_inspect)


async def _read(args: argparse.Namespace) -> VariantMetrics:
    reader = PrometheusReader(args.prometheus, rate_window_s=args.rate_window)
    try:
        target = VariantTarget(args.model, args.variant or args.model, args.matchers)
        return await reader.read_variant(target)
    finally:
        await reader.aclose()


def _inspect(args: argparse.Namespace) -> int:
    metrics = asyncio.run(_read(args))
    settings = VariantSettings(
        name=args.variant or args.model,
        max_replicas=args.max_replicas,
        capacity_per_replica_rps=args.capacity,
        target_queue_time_s=args.target_queue,
    )
    pool = PoolInput("inspect", (VariantInput(settings, metrics, args.replicas),))
    variant = decide(ScalingInput.single(pool), time.time()).pools["inspect"].variants[0]
    print(f"metrics: {metrics}")
    print(f"desired replicas: {variant.desired_replicas} ({variant.reason})")
    return 0
