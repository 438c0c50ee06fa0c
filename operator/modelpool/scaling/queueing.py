"""M/M/c (Erlang C) sizing: how many replicas keep the queue-time tail under a target.

A replica with ``instances`` model instances is ``instances`` servers, each serving
``capacity_rps / instances`` requests per second. For arrival rate ``rate`` the share of requests
that wait longer than ``t`` in an M/M/c queue is ``C(c, a) * exp(-(c*mu - rate) * t)``, with
``C`` the Erlang C probability of waiting. We pick the fewest replicas for which that share is at
most ``1 - attainment``.
"""

from __future__ import annotations

import math


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (1.0 when the queue is unstable)."""
    if offered_load <= 0:
        return 0.0
    if servers <= 0 or offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    rho = offered_load / servers
    return blocking / (1.0 - rho * (1.0 - blocking))


def share_waiting_longer(
    replicas: int, rate: float, capacity_rps: float, instances: int, wait_s: float
) -> float:
    """Share of requests that queue longer than ``wait_s`` with ``replicas`` replicas."""
    if rate <= 0:
        return 0.0
    servers = replicas * instances
    mu = capacity_rps / instances
    if servers <= 0 or rate >= servers * mu:
        return 1.0
    return erlang_c(servers, rate / mu) * math.exp(-(servers * mu - rate) * wait_s)


def replicas_for_target(
    rate: float,
    capacity_rps: float,
    instances: int,
    target_wait_s: float,
    attainment: float,
    limit: int,
) -> int:
    """Fewest replicas (at most ``limit``) keeping the share waiting over ``target_wait_s`` small.

    Returns ``limit`` when even ``limit`` replicas cannot meet the target, 0 when ``rate`` is 0.
    """
    if rate <= 0:
        return 0
    allowed = 1.0 - attainment
    start = max(1, math.floor(rate / capacity_rps))
    for replicas in range(start, limit + 1):
        if share_waiting_longer(replicas, rate, capacity_rps, instances, target_wait_s) <= allowed:
            return replicas
    return limit


def max_rate_for_replicas(
    replicas: int, capacity_rps: float, instances: int, target_wait_s: float, attainment: float
) -> float:
    """Largest arrival rate ``replicas`` replicas serve within the queue-time target (bisection)."""
    if replicas <= 0:
        return 0.0
    allowed = 1.0 - attainment
    low, high = 0.0, replicas * capacity_rps
    for _ in range(60):
        mid = (low + high) / 2
        if share_waiting_longer(replicas, mid, capacity_rps, instances, target_wait_s) <= allowed:
            low = mid
        else:
            high = mid
    return low
