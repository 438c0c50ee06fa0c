"""Capability profiles: what one exported variant measurably does on a real ``tritonserver``.

``CapabilityProfile`` is the stable, documented format (camelCase in JSON/YAML, as in Kubernetes
objects). A ModelPool variant can carry it inline or point at a ConfigMap holding it; the operator
reads ``capacityPerReplicaRps`` as the scaler's default capacity and ``accuracyByBucket`` for tier
thresholds, and reports a profile as stale when its ``modelName`` is not the variant's
``spec.model.name`` or, where the variant sets ``spec.model.digest``, its ``modelDigest`` differs
(``modelpool.controllers.profiles.staleness``). ``CapabilityProfile.staleness(digest, created)``
is the same check against an exported model's ``VERSION.json``, for tools; the operator does not
call it (a pool's spec has no export time).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PROFILE_API_VERSION = "modelpool.dev/v1alpha1"
PROFILE_KIND = "CapabilityProfile"
DEFAULT_BUCKET_EDGES: tuple[float, ...] = (0.0, 0.1, 0.3, 0.6, 1.0)


class _Model(BaseModel):
    # allow_inf_nan=False: YAML's .inf/.nan (or a NaN from a failed measurement) is refused, naming
    # the field ("capacityPerReplicaRps: Input should be a finite number"): an infinite capacity
    # would size every demand to one replica.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )


class LatencyFigures(_Model):
    """Per-request latency seen by the client, in milliseconds."""

    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    requests: int = Field(ge=1, description="Requests measured.")
    concurrency: int = Field(ge=1, description="Requests in flight at once.")


class BucketAccuracy(_Model):
    """Accuracy on the items whose complexity score lies in ``(minComplexity, maxComplexity]``."""

    min_complexity: float = Field(ge=0, le=1)
    max_complexity: float = Field(ge=0, le=1)
    items: int = Field(ge=0)
    accuracy: float | None = Field(default=None, ge=0, le=1, description="None when the bucket is empty.")


class ConcurrentClient(_Model):
    """How the concurrent run's load was generated."""

    processes: int = Field(ge=1, description="Client processes sending requests at once.")
    threads: int = Field(
        ge=1, description="Client threads in all (one request in flight each), split evenly over processes."
    )


class CapabilityProfile(_Model):
    """Measured capabilities of one variant of one model (format version ``modelpool.dev/v1alpha1``)."""

    api_version: Literal["modelpool.dev/v1alpha1"] = "modelpool.dev/v1alpha1"
    kind: Literal["CapabilityProfile"] = "CapabilityProfile"
    variant: str = Field(min_length=1, description="Variant tier: small, quantized or large.")
    model_name: str = Field(min_length=1, description="Triton model name that was measured.")
    model_digest: str = Field(min_length=1, description="Digest of the model's artifacts (VERSION.json).")
    model_created: dt.datetime = Field(description="When the measured model version was exported.")
    created: dt.datetime = Field(description="When this profile was measured.")
    device: str = Field(description="Where the model ran, e.g. 'cpu' or 'gpu'.")
    dataset: str = Field(description="Evaluation data set and split.")
    items: int = Field(ge=1, description="Evaluation items.")
    accuracy: float = Field(ge=0, le=1)
    complexity_scorer: str = Field(description="Which complexity score defined the buckets.")
    accuracy_by_bucket: list[BucketAccuracy]
    latency_batch1: LatencyFigures
    latency_concurrent: LatencyFigures
    throughput_rps: float = Field(gt=0, description="Single-item requests per second under concurrency.")
    capacity_per_replica_rps: float = Field(
        gt=0,
        description="Sustainable single-item req/s of one replica (measured throughput; apply headroom).",
    )
    memory_rss_bytes: int = Field(ge=0, description="Resident memory of the model's Python stub process.")
    concurrent_client: ConcurrentClient | None = Field(
        default=None,
        description="Client processes x threads of the concurrent run (absent in older profiles).",
    )

    def staleness(self, model_digest: str, model_created: dt.datetime) -> str | None:
        """Why this profile does not describe the given model version, or None when it does."""
        if model_digest != self.model_digest:
            return f"profile measured model digest {self.model_digest}, the model is {model_digest}"
        if model_created > self.model_created:
            return (
                f"model exported {model_created.isoformat()} after the profiled one "
                f"({self.model_created.isoformat()})"
            )
        return None

    def to_json(self) -> str:
        """JSON text (camelCase keys)."""
        return self.model_dump_json(by_alias=True, indent=1)

    def to_yaml(self) -> str:
        """YAML text (camelCase keys)."""
        return yaml.safe_dump(json.loads(self.to_json()), sort_keys=False)

    @classmethod
    def from_text(cls, text: str) -> CapabilityProfile:
        """Parse JSON or YAML text; errors name the field."""
        return cls.model_validate(yaml.safe_load(text))

    @classmethod
    def load(cls, path: Path) -> CapabilityProfile:
        """Read a profile file (JSON or YAML)."""
        return cls.from_text(Path(path).read_text(encoding="utf-8"))


def latency_figures(seconds: Sequence[float], concurrency: int) -> LatencyFigures:
    """p50/p95/mean in ms of per-request ``seconds``."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return LatencyFigures(
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        mean_ms=float(ms.mean()),
        requests=len(ms),
        concurrency=concurrency,
    )


def bucket_accuracy(
    correct: npt.NDArray[np.bool_], scores: Sequence[float], edges: Sequence[float] = DEFAULT_BUCKET_EDGES
) -> list[BucketAccuracy]:
    """Accuracy per complexity bucket; the first bucket includes its lower edge."""
    s = np.asarray(scores, dtype=np.float64)
    out = []
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        inside = (s > low) & (s <= high) if i else (s >= low) & (s <= high)
        n = int(inside.sum())
        out.append(
            BucketAccuracy(
                min_complexity=low,
                max_complexity=high,
                items=n,
                accuracy=float(correct[inside].mean()) if n else None,
            )
        )
    return out


@dataclass
class TimedRun:
    """What one run of single-item requests measured: per-request seconds of the answered ones and
    when each answer came, the errors of the failed ones, and the run's start and end (times are
    ``time.monotonic()``, comparable across processes of one machine)."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    answered_at: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Seconds from the first request sent to the last answer."""
        return self.ended - self.started

    @property
    def requests(self) -> int:
        """Requests sent (answered or failed)."""
        return len(self.latencies) + len(self.failures)


def timed_requests(
    make_sender: Callable[[], Callable[[str], Any]],
    texts: Sequence[str],
    concurrency: int,
    ready: Callable[[], None] | None = None,
) -> TimedRun:
    """Send each text as its own request from ``concurrency`` threads, each with its own sender from
    ``make_sender()``. A request that raises counts as failed (its error is kept) and its thread goes
    on. ``ready()``, if given, is called once the senders exist, before the clock starts."""
    run = TimedRun()
    lock = threading.Lock()
    queue = list(texts)

    senders = [make_sender() for _ in range(concurrency)]

    def worker(send: Callable[[str], Any]) -> None:
        while True:
            with lock:
                if not queue:
                    return
                text = queue.pop()
            start = time.perf_counter()
            try:
                send(text)
            except Exception as err:  # any error of one request: counted, not fatal to the run
                with lock:
                    run.failures.append(f"{type(err).__name__}: {err}")
                continue
            elapsed = time.perf_counter() - start
            answered = time.monotonic()
            with lock:
                run.latencies.append(elapsed)
                run.answered_at.append(answered)

    threads = [threading.Thread(target=worker, args=(send,), daemon=True) for send in senders]
    if ready is not None:
        ready()
    run.started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.ended = time.monotonic()
    return run


def stub_rss_bytes(server_pid: int, model: str) -> int:
    """Resident memory of the Python stub serving ``model`` (a child of ``server_pid``); 0 if absent."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields.get("PPid", "0").strip()) != server_pid:
                continue
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"/{model}/" in cmdline and "VmRSS" in fields:
                return int(fields["VmRSS"].split()[0]) * 1024
        except (OSError, ValueError):
            continue
    return 0


def render_table(profiles: Sequence[CapabilityProfile]) -> str:
    """A short fixed-width table of the profiles for people."""
    header = (
        f"{'variant':<10} {'model':<22} {'acc':>6} {'p50 b1':>8} {'p95 b1':>8} {'p50 conc':>9} "
        f"{'p95 conc':>9} {'rps':>7} {'RSS MB':>7}"
    )
    lines = [header, "-" * len(header)]
    for p in profiles:
        lines.append(
            f"{p.variant:<10} {p.model_name:<22} {p.accuracy:>6.3f} {p.latency_batch1.p50_ms:>8.2f} "
            f"{p.latency_batch1.p95_ms:>8.2f} {p.latency_concurrent.p50_ms:>9.2f} "
            f"{p.latency_concurrent.p95_ms:>9.2f} "
            f"{p.throughput_rps:>7.1f} {p.memory_rss_bytes / 2**20:>7.0f}"
        )
        buckets = ", ".join(
            f"({b.min_complexity:g},{b.max_complexity:g}] n={b.items} "
            + ("-" if b.accuracy is None else f"{b.accuracy:.3f}")
            for b in p.accuracy_by_bucket
        )
        lines.append(f"{'':<10} by complexity: {buckets}")
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    """Median of ``values``."""
    return float(statistics.median(values))
