"""What knowing the whole trace allows: the per-second need of the oracle and the smallest static size.

Both work on the simulator's own model (one FIFO queue in front of ``replicas x instances`` slots,
service times from the calibrated :class:`ServiceModel`, a request violates when its queue time plus
its service time exceeds the SLO), so a schedule they find is checked by :func:`simulate` itself.

``clairvoyant_need`` walks the trace one second at a time and keeps, for each second, the fewest
ready replicas with which every request that has arrived by the second's end can still finish
within the SLO if that many replicas stay on. The queue absorbs what the SLO allows: a
burst shorter than the SLO that a replica can work off in time costs no extra replica, which a
sizing from each second's rate alone (Erlang C on a one-second rate) would add.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import replace

from modelpool.scaling.baselines import StaticPolicy
from modelpool.scaling.simulator import ServiceModel, SimConfig, TraceRequest, simulate


def _start(running: list[float], ready_at: float, slots: int) -> tuple[float, int]:
    """When the next FIFO request, ready at ``ready_at``, starts; and how many running ones end by then.

    ``running`` is a heap of finish times; what finished by ``ready_at`` is dropped from it. A
    request starts once fewer than ``slots`` run (more may run while replicas drain), so it waits
    for the ``len(running) - slots + 1`` earliest finishes, which the caller drops if it starts it.
    """
    while running and running[0] <= ready_at:
        heapq.heappop(running)
    wait_for = len(running) - slots + 1
    if wait_for <= 0:
        return ready_at, 0
    return heapq.nsmallest(wait_for, running)[-1], wait_for


class _Walk:
    """The FIFO queue of one trace, advanced second by second with a chosen number of slots."""

    def __init__(self, trace: Sequence[TraceRequest], service: ServiceModel, slo_s: float) -> None:
        self.arrival = [r.arrival_s for r in trace]
        self.service = [service.service_s(r) for r in trace]
        self.slo_s = slo_s
        self.running: list[float] = []  # finish times of started requests (heap)
        self.next = 0  # first request not started
        self.last_start = 0.0  # FIFO: no request starts before the one ahead of it
        self.until = 0  # requests before this index have arrived by the end of the current second

    def _run(
        self,
        running: list[float],
        first: int,
        last_start: float,
        begin: float,
        end: float,
        slots: int,
        strict: bool = True,
    ) -> tuple[bool, int, float]:
        """Start requests from ``first`` with ``slots`` slots from ``begin``, those arrived before ``end``.

        With ``end`` finite, only those that also start before ``end``; with ``end`` infinite, all
        requests up to ``self.until``. Returns whether all of them met the SLO, the first request
        not started and the last start time; ``strict`` stops at the first request that misses it.
        """
        met = True
        i = first
        finite = math.isfinite(end)
        limit = len(self.arrival) if finite else self.until
        while i < limit and self.arrival[i] < end:
            start, ended = _start(running, max(begin, self.arrival[i], last_start), slots)
            if finite and start >= end:
                break
            for _ in range(ended):
                heapq.heappop(running)
            if start + self.service[i] - self.arrival[i] > self.slo_s:
                met = False
                if strict:
                    break
            heapq.heappush(running, start + self.service[i])
            last_start = start
            i += 1
        return met, i, last_start

    def fits(self, second: int, slots: int) -> bool:
        """Would ``slots`` slots, from this second on, meet the deadline of every request arrived?"""
        running = list(self.running)
        ok, i, last = self._run(running, self.next, self.last_start, float(second), second + 1.0, slots)
        if not ok:
            return False
        ok, _, _ = self._run(running, i, last, second + 1.0, math.inf, slots)
        return ok

    def advance(self, second: int, slots: int) -> None:
        """Serve this second with ``slots`` slots and keep the queue's state at its end."""
        _, self.next, self.last_start = self._run(
            self.running, self.next, self.last_start, float(second), second + 1.0, slots, strict=False
        )

    def arrived_by(self, t: float) -> int:
        """Index of the first request arriving at or after ``t``."""
        i = self.next
        while i < len(self.arrival) and self.arrival[i] < t:
            i += 1
        return i


def clairvoyant_need(
    trace: Sequence[TraceRequest],
    service: ServiceModel,
    slo_s: float,
    instances: int = 1,
    min_replicas: int = 1,
    max_replicas: int = 64,
) -> list[int]:
    """Fewest ready replicas for each second of ``trace`` that keep every request within the SLO.

    Greedy, second by second: the fewest replicas for which every request that has arrived by the
    second's end still meets the SLO if that many replicas stay on. (Assuming ``max_replicas``
    from the next second on instead defers work to later spikes of up to 19 replicas, and costs
    more GPU-hours on every trace of the benchmark.) A second where even ``max_replicas`` cannot is
    given ``max_replicas``.
    """
    if min_replicas < 1:
        raise ValueError(f"min_replicas={min_replicas}: the oracle needs at least one replica")
    if not trace:
        return [min_replicas]
    walk = _Walk(trace, service, slo_s)
    need: list[int] = []
    for second in range(math.ceil(trace[-1].arrival_s) + 1):
        walk.until = walk.arrived_by(second + 1.0)
        chosen = next(
            (n for n in range(min_replicas, max_replicas + 1) if walk.fits(second, n * instances)),
            max_replicas,
        )
        walk.advance(second, chosen * instances)
        need.append(chosen)
    return need


def fewest_static_replicas(
    trace: Sequence[TraceRequest], service: ServiceModel, cfg: SimConfig, max_replicas: int = 64
) -> int:
    """Smallest fixed replica count that serves the whole trace with no SLO violation (bisection).

    ``max_replicas`` when none does. Each probe is a full :func:`simulate` run, so the answer is
    the simulator's own.
    """
    low, high = 1, max_replicas
    while low < high:
        mid = (low + high) // 2
        result = simulate(trace, service, replace(cfg, initial_replicas=mid), StaticPolicy(mid))
        if result.violations == 0:
            high = mid
        else:
            low = mid + 1
    return low
