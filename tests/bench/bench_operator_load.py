"""What a decision interval costs Prometheus and the Kubernetes API server, on the real parts.

The fast operating point (``manifests/samples/modelpool-bursty.yaml``: a decision every second on
2 s rates of a 0.5 s scrape) buys attainment and GPU-hours with load on Prometheus and on the API
server, which the trace-driven bench cannot see. This bench measures it: a real local cluster
(kwok, ``modelpool devcluster``), the operator as users run it, a real tritonserver serving
``echo_small`` under a light paced load (127.0.0.1), and a real Prometheus scraping it every
0.5 s. For each ``intervalSeconds`` (1: the sample; 2: the default point; 15: the HPA's sync
period, the baseline) it applies one ModelPool of three variants with the sample's settings and a
weighted RoutingPolicy on it (no router pod matches it: pod IPs here are fake), lets it settle,
and counts over a window:

* Prometheus: instant queries per second (its own ``prometheus_http_requests_total``), the CPU
  seconds per second of the Prometheus process, and its mean query time;
* API server: requests per second for the kinds the operator reads or writes (the API server's
  ``apiserver_request_total``, by verb; watches are long-running and not counted);
* the operator: CPU seconds per second of its process, decisions per second, mean reconcile
  time, and the RoutingPolicy's passes per second and their mean time (its own metrics).

Usage (needs the control-plane binaries of ``modelpool devcluster build``, Debian's prometheus
and the nvidia-pytriton wheel, as the integration tests do)::

    PYTHONPATH=operator:tests python tests/bench/bench_operator_load.py [--window 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from integration.cluster.kubetools import OperatorProcess, parse_metrics, total
from modelpool.devcluster import toolchain
from modelpool.devcluster.cluster import DevCluster
from modelpool.devcluster.prometheus import PrometheusProcess
from modelpool.devcluster.triton import TritonProcess, free_port

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "tests" / "fixtures" / "triton_models"
SAMPLE = REPO / "manifests" / "samples" / "modelpool-bursty.yaml"
NAMESPACE = "load-bench"
SCRAPE_S = 0.5
LOAD_RPS = 20.0
KINDS = (
    "modelpools",
    "routingpolicies",
    "deployments",
    "services",
    "poddisruptionbudgets",
    "events",
    "configmaps",
    "pods",
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_manifest(interval_s: int, prometheus_url: str) -> dict[str, Any]:
    """The bursty sample with three variants (small, quantized, large), all serving echo_small."""
    pool: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    pool["metadata"] = {"name": "load", "namespace": NAMESPACE}
    pool["spec"]["scaling"].update(intervalSeconds=interval_s, prometheusURL=prometheus_url)
    template = pool["spec"]["variants"][0]
    variants = []
    for tier in ("small", "quantized", "large"):
        variant = copy.deepcopy(template)
        variant.update(name=tier, tier=tier, maxReplicas=4, gpusPerReplica=1)
        variant["model"] = {"name": "echo_small", "repository": "/models"}
        variant["scaling"]["capacityPerReplicaRps"] = 50
        variants.append(variant)
    pool["spec"]["variants"] = variants
    return pool


def policy_manifest() -> dict[str, Any]:
    """A weighted RoutingPolicy on the pool, as a user would route to it. No router pod matches its
    selector (the cluster's pod IPs are fake and nothing may be sent to them), so each policy pass
    does its reads and writes but pushes to no router."""
    return {
        "apiVersion": "modelpool.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "load", "namespace": NAMESPACE},
        "spec": {
            "poolRef": {"name": "load"},
            "mode": "weighted",
            "weights": [
                {"variant": "small", "weight": 70},
                {"variant": "quantized", "weight": 20},
                {"variant": "large", "weight": 10},
            ],
            "routerSelector": {"matchLabels": {"app.kubernetes.io/name": "modelpool-router-none"}},
        },
    }


@contextmanager
def paced_load(url: str, rps: float) -> Iterator[list[int]]:
    """Open-loop requests to echo_small at ``rps`` until the block ends (bounded by its length)."""
    codes: list[int] = []
    stop = threading.Event()

    def run() -> None:
        body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["load"]}]}
        with httpx.Client(timeout=10.0) as client:
            start, i = time.monotonic(), 0
            while not stop.is_set():
                delay = start + i / rps - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                    continue
                codes.append(client.post(f"{url}/v2/models/echo_small/infer", json=body).status_code)
                i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(timeout=15)


class Probe:
    """Counters of Prometheus, the API server and the operator, read at one instant."""

    def __init__(self, cluster: DevCluster, prom: PrometheusProcess, operator: OperatorProcess, port: int):
        self.cluster, self.prom, self.operator, self.port = cluster, prom, operator, port

    def read(self) -> dict[str, float]:
        prom = parse_metrics(httpx.get(f"{self.prom.url}/metrics", timeout=10).text)
        api = parse_metrics(self.cluster.kubectl("get", "--raw", "/metrics").stdout)
        own = parse_metrics(httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text)
        assert self.prom.pid is not None and self.operator.proc is not None
        counts = {
            "t": time.monotonic(),
            "prom_queries": total(prom, "prometheus_http_requests_total", handler="/api/v1/query"),
            "prom_query_s": total(prom, "prometheus_engine_query_duration_seconds_sum", slice="inner_eval"),
            "prom_query_n": total(prom, "prometheus_engine_query_duration_seconds_count", slice="inner_eval"),
            "prom_cpu": cpu_seconds(self.prom.pid),
            "op_cpu": cpu_seconds(self.operator.proc.pid),
            "decisions": total(own, "modelpool_scaling_decisions_total"),
            "reconcile_s": total(own, "modelpool_reconcile_duration_seconds_sum", controller="modelpool"),
            "reconcile_n": total(own, "modelpool_reconcile_duration_seconds_count", controller="modelpool"),
            "policy_s": total(own, "modelpool_reconcile_duration_seconds_sum", controller="routingpolicy"),
            "policy_n": total(own, "modelpool_reconcile_duration_seconds_count", controller="routingpolicy"),
        }
        for verb in ("GET", "LIST", "PATCH", "POST", "PUT", "DELETE"):
            for kind in KINDS:
                counts[f"api_{verb}_{kind}"] = total(api, "apiserver_request_total", verb=verb, resource=kind)
            counts[f"api_{verb}"] = sum(counts[f"api_{verb}_{kind}"] for kind in KINDS)
        counts["api_status_patch"] = total(
            api, "apiserver_request_total", verb="PATCH", resource="modelpools", subresource="status"
        )
        return counts


def rates(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Per-second rates and means between two probes."""
    span = after["t"] - before["t"]
    d = {k: after[k] - before[k] for k in before}
    out = {k: d[k] / span for k in d if k.startswith("api_") and (d[k] or k.count("_") == 1)}
    out |= {
        "prom_queries": d["prom_queries"] / span,
        "prom_cpu": d["prom_cpu"] / span,
        "prom_query_ms": 1000 * d["prom_query_s"] / d["prom_query_n"] if d["prom_query_n"] else 0.0,
        "op_cpu": d["op_cpu"] / span,
        "decisions": d["decisions"] / span,
        "reconcile_ms": 1000 * d["reconcile_s"] / d["reconcile_n"] if d["reconcile_n"] else 0.0,
        "policy_passes": d["policy_n"] / span,
        "policy_ms": 1000 * d["policy_s"] / d["policy_n"] if d["policy_n"] else 0.0,
    }
    return out


def measure(
    cluster: DevCluster,
    probe: Probe,
    prom: PrometheusProcess,
    interval_s: int,
    settle_s: float,
    window_s: float,
) -> dict[str, float]:
    """Apply the pool at ``interval_s``, let it settle, and count over ``window_s``."""
    for manifest in (pool_manifest(interval_s, prom.url), policy_manifest()):
        cluster.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))
    time.sleep(settle_s)
    before = probe.read()
    time.sleep(window_s)
    after = probe.read()
    cluster.kubectl("delete", "routingpolicy", "load", "-n", NAMESPACE, "--wait=true")
    cluster.kubectl("delete", "modelpool", "load", "-n", NAMESPACE, "--wait=true")
    return rates(before, after)


def table(results: dict[int, dict[str, float]], baseline: int) -> str:
    """One row per quantity, one column per interval, and each interval's ratio to the baseline."""
    columns = sorted(results)
    rows = [
        ("Prometheus instant queries /s", "prom_queries", "{:.1f}"),
        ("Prometheus CPU (cores)", "prom_cpu", "{:.3f}"),
        ("Prometheus mean query time (ms)", "prom_query_ms", "{:.2f}"),
        ("API GET /s (operator's kinds)", "api_GET", "{:.2f}"),
        ("API LIST /s", "api_LIST", "{:.2f}"),
        ("API PATCH /s", "api_PATCH", "{:.2f}"),
        ("  of them ModelPool status /s", "api_status_patch", "{:.2f}"),
        ("API POST /s (events, creates)", "api_POST", "{:.2f}"),
        ("operator CPU (cores)", "op_cpu", "{:.3f}"),
        ("decisions /s (3 variants)", "decisions", "{:.2f}"),
        ("mean reconcile time (ms)", "reconcile_ms", "{:.1f}"),
        ("RoutingPolicy passes /s", "policy_passes", "{:.2f}"),
        ("mean RoutingPolicy pass (ms)", "policy_ms", "{:.1f}"),
    ]
    head = "| quantity | " + " | ".join(f"intervalSeconds {c}" for c in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for label, key, fmt in rows:
        base = results[baseline][key]
        cells = []
        for c in columns:
            value = results[c][key]
            ratio = f" ({value / base:.1f}x)" if c != baseline and base > 0 else ""
            cells.append(fmt.format(value) + ratio)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 15])
    parser.add_argument("--window", type=float, default=60.0, help="seconds counted per interval")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after apply before counting")
    parser.add_argument("--out", type=Path, default=Path("out/operator_load"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    workdir = toolchain.cache_dir() / "kwok-bench"
    cluster = DevCluster(name="modelpool-bench", workdir=workdir, kubeconfig_out=workdir / "kubeconfig.yaml")
    cluster.create(nodes=2, gpus_per_node=8)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modelpools.modelpool.dev",
        "crd/routingpolicies.modelpool.dev",
    )
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    port = free_port()
    operator = OperatorProcess(
        cluster,
        args.out / "operator.log",
        resync_seconds=30.0,  # the operator's default (the tests' fixture resyncs every 5 s)
        env_extra={"MODELPOOL_METRICS_PORT": str(port), "MODELPOOL_METRICS_ADDR": "127.0.0.1"},
    )
    results: dict[int, dict[str, float]] = {}
    try:
        with (
            TritonProcess(MODELS, ["echo_small"]) as triton,
            PrometheusProcess(
                {"triton": [f"127.0.0.1:{triton.metrics_port}"]}, scrape_interval_s=SCRAPE_S
            ) as prom,
            paced_load(triton.http_url, LOAD_RPS) as codes,
        ):
            operator.start()
            time.sleep(5)
            probe = Probe(cluster, prom, operator, port)
            for interval in args.intervals:
                results[interval] = measure(cluster, probe, prom, interval, args.settle, args.window)
                print(f"intervalSeconds {interval}: {results[interval]}", flush=True)
            served = codes.count(200)
            sent = len(codes)
    finally:
        operator.stop()
        cluster.delete()
    baseline = max(results)
    text = (
        f"ModelPool of 3 variants (the bursty sample's settings) and a weighted RoutingPolicy on it, "
        f"Prometheus scraping every {SCRAPE_S} s, "
        f"{LOAD_RPS:.0f} req/s to Triton ({served} of {sent} served), {args.window:.0f} s counted per "
        f"interval; ratios against intervalSeconds {baseline}\n\n{table(results, baseline)}\n"
    )
    print(text)
    (args.out / "operator_load.md").write_text(text)
    (args.out / "operator_load.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
