"""Trace-driven discrete-event simulator of one variant's Triton replicas under a scaling policy.

Model: requests arrive at the trace's timestamps and wait in one FIFO queue in front of the ready
replicas (the router balances to the least-loaded replica); each replica runs ``instances`` requests
at a time; a request's service time follows its token counts (:class:`ServiceModel`, calibrated on
the real tritonserver). A policy is asked for the desired replica count every ``interval_s``; new
replicas serve after ``startup_delay_s``; removed replicas finish their running requests first.
What the policy sees is what Prometheus would show: counters scraped every ``scrape_interval_s``
and turned into rates over ``rate_window_s``, as ``rate()`` does.

The same :func:`modelpool.scaling.decide` used by the operator drives :class:`DecidePolicy`.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from modelpool.scaling.decide import decide
from modelpool.scaling.types import (
    PoolInput,
    RatePoint,
    ScalingInput,
    VariantInput,
    VariantMetrics,
    VariantSettings,
    VariantState,
)


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: arrival (s from the first request) and token counts."""

    arrival_s: float
    context_tokens: int
    generated_tokens: int


def load_trace(path: Path, time_scale: float = 1.0) -> list[TraceRequest]:
    """Read a ``TIMESTAMP,ContextTokens,GeneratedTokens`` CSV (Azure LLM inference trace format).

    Timestamps become seconds after the first request, multiplied by ``time_scale``.
    """
    rows: list[tuple[datetime, int, int]] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"trace {path}: missing columns {sorted(missing)}; expected "
                "TIMESTAMP,ContextTokens,GeneratedTokens"
            )
        for line_no, row in enumerate(reader, start=2):
            try:
                stamp = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
                rows.append((stamp, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
            except ValueError as exc:
                raise ValueError(f"trace {path} line {line_no}: {exc}") from exc
    if not rows:
        raise ValueError(f"trace {path}: no requests")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    return [TraceRequest((t - t0).total_seconds() * time_scale, c, g) for t, c, g in rows]


@dataclass(frozen=True)
class ServiceModel:
    """Service time of one request on one model instance: ``base + a*context + b*generated``."""

    base_s: float
    per_context_token_s: float
    per_generated_token_s: float

    def service_s(self, req: TraceRequest) -> float:
        """Seconds one instance spends on ``req``."""
        return (
            self.base_s
            + self.per_context_token_s * req.context_tokens
            + self.per_generated_token_s * req.generated_tokens
        )


@dataclass(frozen=True)
class SimConfig:
    """Simulation parameters shared by every policy of one run."""

    latency_slo_s: float
    startup_delay_s: float = 10.0
    scrape_interval_s: float = 5.0
    rate_window_s: float = 15.0
    instances_per_replica: int = 1
    gpus_per_replica: int = 1
    initial_replicas: int = 1
    series_points: int = 8
    series_step_s: float | None = None
    """Spacing of the rate series' points, as the operator reads them: a Prometheus subquery
    ``[span:step]`` with the step a quarter of the rate window, evaluated at multiples of the step
    (Prometheus aligns subquery steps to the epoch), each from the samples scraped by then. None:
    one point per scrape, at the scrape."""
    shutdown_delay_s: float = 0.0
    """How long a removed replica holds its GPU after its last request is done (or after it is
    removed, if it was idle or still starting): the time its pod takes to terminate. A Triton pod
    takes 2-3 s after SIGTERM (``test_scale_down_drain.py``), or its 30 s exit timeout while a
    client keeps a connection to it open. Replicas still running when the trace ends pay none."""
    decision_phase_s: float = 0.0
    """How long after each scrape the policy decides. At 0 a decision falls on a scrape's instant
    and is taken just before it, so it sees the previous scrape: staleness of one full scrape, the
    worst case. An operator's timer is not synchronised with Prometheus, so its data is on average
    half a scrape old; the benchmark uses that."""


@dataclass(frozen=True)
class Observation:
    """What Prometheus shows at the newest scrape, plus the deployment's counts."""

    t: float
    arrival_series: tuple[RatePoint, ...]
    served_series: tuple[RatePoint, ...]
    queue_time_s: float | None
    compute_time_s: float | None
    pending: int
    ready_replicas: int
    rate_window_s: float | None = None


class Policy(Protocol):
    """A scaling policy: asked every ``interval_s`` for the desired replicas."""

    name: str
    interval_s: float

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """Desired replica count given the newest observation and the current spec."""
        ...


class DecidePolicy:
    """ModelPool's :func:`decide` for one variant, evaluated after every scrape."""

    def __init__(self, settings: VariantSettings, interval_s: float, name: str = "modelpool") -> None:
        self.name = name
        self.interval_s = interval_s
        self.settings = settings
        self.state: VariantState | None = None
        self.reasons: list[tuple[float, str]] = []

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """Build the variant's metrics the way the Prometheus reader does and call decide()."""
        metrics = VariantMetrics(
            rate_series=obs.arrival_series,
            router_rps=obs.arrival_series[-1].rps if obs.arrival_series else None,
            queue_time_s=obs.queue_time_s,
            compute_time_s=obs.compute_time_s,
            pending_requests=float(obs.pending),
            newest_sample_t=obs.t,
            rate_window_s=obs.rate_window_s,
        )
        variant = VariantInput(self.settings, metrics, current, self.state, ready_replicas=obs.ready_replicas)
        pool = PoolInput("sim", (variant,))
        decision = decide(ScalingInput.single(pool), now).pools["sim"].variants[0]
        self.state = decision.state
        if decision.changed:
            self.reasons.append((now, decision.reason))
        return decision.desired_replicas


@dataclass
class _Replica:
    rid: int
    started_at: float
    ready_at: float
    busy: int = 0
    draining: bool = False


@dataclass
class SimResult:
    """Outcome of one policy on one trace."""

    policy: str
    latencies_s: list[float]
    slo_s: float
    gpu_seconds: float
    scale_actions: int
    desired_timeline: list[tuple[float, int]]
    ready_timeline: list[tuple[float, int]]
    duration_s: float
    reasons: list[tuple[float, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests served."""
        return len(self.latencies_s)

    @property
    def violations(self) -> int:
        """Requests whose latency exceeded the SLO."""
        return sum(1 for x in self.latencies_s if x > self.slo_s)

    @property
    def attainment(self) -> float:
        """Share of requests within the latency SLO."""
        return 1.0 - self.violations / max(1, self.requests)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours provisioned (starting, ready and draining replicas all count)."""
        return self.gpu_seconds / 3600.0

    def latency_quantile(self, q: float) -> float:
        """Latency quantile ``q`` in seconds."""
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


class _Sim:
    def __init__(self, trace: Sequence[TraceRequest], service: ServiceModel, cfg: SimConfig) -> None:
        self.trace = trace
        self.service = service
        self.cfg = cfg
        self.queue: deque[tuple[float, float]] = deque()
        self.replicas: dict[int, _Replica] = {}
        self.ids = itertools.count()
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = itertools.count()
        self.gpu_seconds = 0.0
        self.latencies: list[float] = []
        self.arrived = 0
        self.completed = 0
        self.queue_sum = 0.0
        self.compute_sum = 0.0
        self.scrapes: list[tuple[float, int, int, float, float]] = []
        self.ready_timeline: list[tuple[float, int]] = []

    def push(self, t: float, kind: str, ref: int = 0) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, ref))

    def active(self) -> list[_Replica]:
        return [r for r in self.replicas.values() if not r.draining]

    def ready_count(self, now: float) -> int:
        return sum(1 for r in self.active() if r.ready_at <= now)

    def note_ready(self, now: float) -> None:
        n = self.ready_count(now)
        if not self.ready_timeline or self.ready_timeline[-1][1] != n:
            self.ready_timeline.append((now, n))

    def retire(self, r: _Replica, now: float, shutdown: bool = True) -> None:
        held = now - r.started_at + (self.cfg.shutdown_delay_s if shutdown else 0.0)
        self.gpu_seconds += held * self.cfg.gpus_per_replica
        del self.replicas[r.rid]

    def scale_to(self, target: int, now: float) -> None:
        active = self.active()
        if target > len(active):
            for _ in range(target - len(active)):
                r = _Replica(next(self.ids), now, now + self.cfg.startup_delay_s)
                self.replicas[r.rid] = r
                self.push(r.ready_at, "ready", r.rid)
            return
        # Remove not-yet-ready ones first, then idle ones, then busy ones (they drain): newest first.
        order = sorted(active, key=lambda r: (r.ready_at <= now, r.busy > 0, -r.rid))
        for r in order[: len(active) - target]:
            if r.ready_at > now or r.busy == 0:
                self.retire(r, now)
            else:
                r.draining = True
        self.note_ready(now)

    def dispatch(self, now: float) -> None:
        cap = self.cfg.instances_per_replica
        while self.queue:
            free = [r for r in self.active() if r.ready_at <= now and r.busy < cap]
            if not free:
                return
            r = min(free, key=lambda x: (x.busy, x.rid))
            arrival, service = self.queue.popleft()
            r.busy += 1
            self.queue_sum += now - arrival
            self.compute_sum += service
            self.latencies.append(now - arrival + service)
            self.push(now + service, "done", r.rid)

    def _window_start(self, i: int) -> tuple[float, int, int, float, float] | None:
        """The newest scrape at least one rate window before scrape ``i``."""
        cutoff = self.scrapes[i][0] - self.cfg.rate_window_s + 1e-9
        # Walk back from i (a few scrapes) rather than copy the hour of scrapes before it.
        return next((self.scrapes[j] for j in range(i - 1, -1, -1) if self.scrapes[j][0] <= cutoff), None)

    def observe(self, now: float) -> Observation:
        window = self.cfg.rate_window_s
        points: list[tuple[RatePoint, RatePoint]] = []
        q_time: float | None = None
        c_time: float | None = None
        # Queue and compute time: instant queries, over the newest window with completions.
        for i in range(len(self.scrapes) - 1, -1, -1):
            _, _, done, qsum, csum = self.scrapes[i]
            past = self._window_start(i)
            if past is None:
                break
            if done > past[2]:
                q_time = (qsum - past[3]) / (done - past[2])
                c_time = (csum - past[4]) / (done - past[2])
                break
        step = self.cfg.series_step_s
        grid: float | None = None  # the next evaluation time of an aligned series
        if step is not None and self.scrapes:
            grid = math.floor(self.scrapes[-1][0] / step + 1e-9) * step
        for i in range(len(self.scrapes) - 1, -1, -1):
            t, arrived, done, _, _ = self.scrapes[i]
            if grid is not None and t > grid + 1e-9:
                continue  # scraped after the evaluation time: not yet in this point
            past = self._window_start(i)
            if past is None:
                break
            span = t - past[0]
            at = t if grid is None else grid
            points.append((RatePoint(at, (arrived - past[1]) / span), RatePoint(at, (done - past[2]) / span)))
            if len(points) >= self.cfg.series_points:
                break
            if grid is not None and step is not None:
                grid -= step
        points.reverse()
        return Observation(
            t=self.scrapes[-1][0] if self.scrapes else now,
            arrival_series=tuple(a for a, _ in points),
            served_series=tuple(s for _, s in points),
            queue_time_s=q_time,
            compute_time_s=c_time,
            pending=len(self.queue),
            ready_replicas=self.ready_count(now),
            rate_window_s=window,
        )

    def run(self, policy: Policy) -> SimResult:
        cfg = self.cfg
        current = cfg.initial_replicas
        self.scale_to(current, 0.0)
        for r in self.replicas.values():  # initial replicas are warm
            r.ready_at = 0.0
        self.note_ready(0.0)
        desired_timeline = [(0.0, current)]
        actions = 0
        self.push(0.0, "scrape")
        self.push(policy.interval_s + cfg.decision_phase_s, "tick")
        arrivals = iter(self.trace)
        nxt = next(arrivals, None)
        end_of_trace = self.trace[-1].arrival_s if self.trace else 0.0
        now = 0.0
        while self.events:
            if nxt is not None and nxt.arrival_s <= self.events[0][0]:
                now = nxt.arrival_s
                self.arrived += 1
                self.queue.append((now, self.service.service_s(nxt)))
                self.dispatch(now)
                nxt = next(arrivals, None)
                continue
            now, _, kind, ref = heapq.heappop(self.events)
            if kind == "done":
                r = self.replicas[ref]
                r.busy -= 1
                self.completed += 1
                if r.draining and r.busy == 0:
                    self.retire(r, now)
            elif kind == "ready":
                self.note_ready(now)
            elif kind == "scrape":
                self.scrapes.append((now, self.arrived, self.completed, self.queue_sum, self.compute_sum))
                if nxt is not None or self.queue or any(r.busy for r in self.replicas.values()):
                    self.push(now + cfg.scrape_interval_s, "scrape")
            elif kind == "tick":
                target = max(0, policy.desired(self.observe(now), now, current))
                if target != current:
                    actions += 1
                    current = target
                    desired_timeline.append((now, current))
                    self.scale_to(current, now)
                if nxt is not None or self.queue:
                    self.push(now + policy.interval_s, "tick")
            self.dispatch(now)
        end = max(now, end_of_trace)
        for r in list(self.replicas.values()):
            self.retire(r, end, shutdown=False)
        reasons = list(getattr(policy, "reasons", []))
        return SimResult(
            policy=policy.name,
            latencies_s=self.latencies,
            slo_s=cfg.latency_slo_s,
            gpu_seconds=self.gpu_seconds,
            scale_actions=actions,
            desired_timeline=desired_timeline,
            ready_timeline=self.ready_timeline,
            duration_s=end,
            reasons=reasons,
        )


def simulate(
    trace: Sequence[TraceRequest], service: ServiceModel, cfg: SimConfig, policy: Policy
) -> SimResult:
    """Replay ``trace`` against replicas scaled by ``policy``; every request is served to the end."""
    return _Sim(trace, service, cfg).run(policy)


def reaction_times(
    result: SimResult, trace: Sequence[TraceRequest], capacity_rps: float, window_s: float = 5.0
) -> list[float]:
    """Seconds from each overload onset to the policy's next scale-up decision.

    An overload starts at the first second where the arrival rate over the last ``window_s``
    exceeds ``desired replicas x capacity_rps``; its reaction is the time until the desired count
    next rises (overloads that end before any scale-up are not counted).
    """
    horizon = math.ceil(result.duration_s) + 1
    per_second = [0] * (horizon + 1)
    for req in trace:
        per_second[min(horizon, int(req.arrival_s))] += 1
    increases = [
        t
        for (t, n), (_, prev) in zip(result.desired_timeline[1:], result.desired_timeline, strict=False)
        if n > prev
    ]
    out: list[float] = []
    timeline = result.desired_timeline
    idx = 0
    in_overload = False
    running = 0
    for sec in range(horizon):
        running += per_second[sec]
        if sec >= window_s:
            running -= per_second[sec - int(window_s)]
        while idx + 1 < len(timeline) and timeline[idx + 1][0] <= sec:
            idx += 1
        overloaded = running / window_s > timeline[idx][1] * capacity_rps
        if overloaded and not in_overload:
            onset = sec + 1.0  # the overload is visible once this second's arrivals are in
            nxt = next((t for t in increases if t >= sec), None)
            if nxt is not None and nxt - onset <= 60:
                out.append(max(0.0, nxt - onset))
        in_overload = overloaded
    return out
