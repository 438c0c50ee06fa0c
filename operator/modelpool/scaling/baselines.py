"""Baseline policies for the simulator: Kubernetes HPA, static peak provisioning, and an oracle."""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelpool.scaling.queueing import replicas_for_target
from modelpool.scaling.simulator import Observation, TraceRequest
from modelpool.scaling.stabilization import History, stabilize


class HpaPolicy:
    """The Kubernetes HPA algorithm (autoscaling/v2, default behaviour) on an AverageValue metric.

    Every ``sync_period_s`` (default 15 s): ``usageRatio = metric / (target * currentReplicas)``;
    within ``tolerance`` (0.1) nothing changes, else ``desired = ceil(currentReplicas * ratio)``.
    Then the default behaviour: scale-up stabilisation 0 s, at most ``max(100%, 4 pods)`` more per
    period; scale-down stabilisation 300 s (highest recommendation in the window), then min/max.
    The metric is the arrival rate the router counts (req/s, same Prometheus window as ModelPool).
    """

    def __init__(
        self,
        target_rps_per_replica: float,
        min_replicas: int = 1,
        max_replicas: int = 64,
        sync_period_s: float = 15.0,
        tolerance: float = 0.1,
        scale_down_window_s: float = 300.0,
        name: str = "hpa",
    ) -> None:
        self.name = name
        self.interval_s = sync_period_s
        self.target = target_rps_per_replica
        self.min_replicas = max(1, min_replicas)
        self.max_replicas = max_replicas
        self.tolerance = tolerance
        self.down_window_s = scale_down_window_s
        self.history: History = ()

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """One HPA sync: ratio -> tolerance -> stabilisation -> rate limits -> min/max."""
        if not obs.arrival_series:
            return max(current, self.min_replicas)
        usage = obs.arrival_series[-1].rps
        base = max(current, 1)
        ratio = usage / (self.target * base)
        recommendation = base if abs(ratio - 1.0) <= self.tolerance else math.ceil(base * ratio)
        stabilized, self.history = stabilize(
            current, recommendation, self.history, now, 0.0, self.down_window_s
        )
        scale_up_limit = max(2 * current, current + 4)
        limited = min(stabilized, scale_up_limit)
        return max(self.min_replicas, min(self.max_replicas, limited))


class StaticPolicy:
    """A fixed replica count (provisioning for the peak)."""

    def __init__(self, replicas: int, name: str = "static-peak") -> None:
        self.name = name
        self.interval_s = 60.0
        self.replicas = replicas

    def desired_at_start(self) -> int:
        """Replicas to start warm with (all of them: static provisioning is always up)."""
        return self.replicas

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """Always the fixed count."""
        return self.replicas


def need_per_second(
    trace: Sequence[TraceRequest],
    capacity_rps: float,
    instances: int,
    target_queue_s: float,
    attainment: float,
    max_replicas: int,
    window_s: int = 1,
) -> list[int]:
    """Replicas the scaler's queueing model (Erlang C) needs at each second for its *actual* rate.

    The rate is that of the next ``window_s`` seconds. Sized from the rate alone, this ignores what
    the queue can absorb within the SLO; the oracle's tighter need is
    :func:`modelpool.scaling.clairvoyant.clairvoyant_need`.
    """
    horizon = math.ceil(trace[-1].arrival_s) + 1 if trace else 1
    counts = [0] * (horizon + window_s)
    for req in trace:
        counts[int(req.arrival_s)] += 1
    need: list[int] = []
    running = sum(counts[:window_s])
    for sec in range(horizon):
        rate = running / window_s
        need.append(
            replicas_for_target(rate, capacity_rps, instances, target_queue_s, attainment, max_replicas)
        )
        running += counts[sec + window_s] - counts[sec]
    return need


class OraclePolicy:
    """Knows the whole trace; pays the start-up delay but starts replicas exactly early enough.

    At time ``t`` it wants the most replicas needed anywhere in ``[t, t + startup + interval]``:
    replicas it adds now are ready at ``t + startup``, and it never removes a replica it would
    have to start again before a new one could be ready. No stabilisation, no tolerance.
    """

    def __init__(
        self,
        need: Sequence[int],
        startup_delay_s: float,
        min_replicas: int = 1,
        interval_s: float = 1.0,
        name: str = "oracle",
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.need = list(need)
        self.lead = math.ceil(startup_delay_s + interval_s)
        self.min_replicas = min_replicas

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """Peak need over the coming start-up delay."""
        start = int(now)
        window = self.need[start : start + self.lead + 1]
        return max([self.min_replicas, *window])


class ReactiveIdealPolicy:
    """The best a purely reactive policy could see: every past second's exact need, with no lag.

    Each second it holds the peak need of the last ``memory_s`` seconds (need as the oracle counts
    it), plus ``spare`` replicas. It knows nothing of the future, so it shows how much of the
    oracle's advantage is foresight: what no policy that reacts to metrics can win back, however
    fast its metrics.
    """

    def __init__(self, need: Sequence[int], memory_s: float, min_replicas: int = 1, spare: int = 0) -> None:
        self.name = f"ideal-reactive@{memory_s:g}s" + (f"+{spare}" if spare else "")
        self.interval_s = 1.0
        self.need = list(need)
        self.memory = max(1, math.ceil(memory_s))
        self.min_replicas = min_replicas
        self.spare = spare

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """Peak need over the last ``memory_s`` complete seconds, plus the spare replicas."""
        end = int(now)
        return max([self.min_replicas, *self.need[max(0, end - self.memory) : end]]) + self.spare


class BurstForesightPolicy:
    """Blind to burst onsets, clairvoyant inside bursts: what knowing how a burst unfolds is worth.

    While the need is at the floor it holds the floor and sees nothing coming. Once a second above
    the floor has passed, it knows the need of that burst (until the need falls back to the floor)
    over the next start-up + 1 s, like the oracle. It is no policy a scaler can run; it splits the
    oracle's lead into what foresight of onsets buys and what foresight within a burst buys.
    """

    def __init__(self, need: Sequence[int], startup_delay_s: float, min_replicas: int = 1) -> None:
        self.name = "burst-foresight"
        self.interval_s = 1.0
        self.need = list(need)
        self.lead = math.ceil(startup_delay_s + 1.0)
        self.min_replicas = min_replicas

    def desired(self, obs: Observation, now: float, current: int) -> int:
        """The floor, or, inside a burst, its peak need over the coming start-up."""
        t = int(now)
        if t == 0 or t > len(self.need) or self.need[t - 1] <= self.min_replicas:
            return self.min_replicas
        peak = self.min_replicas
        for need in self.need[t - 1 : t + self.lead + 1]:
            if need <= self.min_replicas:
                break
            peak = max(peak, need)
        return peak
