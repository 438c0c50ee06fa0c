"""How a reconcile loop retries after a failed pass, above all while the API server is away.

An API server (or its etcd) that is restarting, upgrading or overloaded fails every pass of every
object at once. Such a failure is not the object's fault: it is logged in one line (no traceback),
not posted as an Event (there is no API server to post it to, and kopf would post the queued ones
in a burst once it is back), and the retries back off to at most one resync period, so an outage
costs a bounded number of requests and log lines, and convergence afterwards waits for at most one
period (a watch event wakes the loop sooner).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import httpx

from modelpool.kube import KubeError

SERVER_BUSY_STATUSES = frozenset({429, 503, 504})
"""Answers that say the API server cannot serve now, whatever the request: too many requests (its
storage still initializing), unavailable (``the request has been made before all known HTTP paths
have been installed``, right after it starts), a timeout (its etcd away)."""

RETRY_LATER_STATUSES = SERVER_BUSY_STATUSES | {500, 502}
"""For a pass as a whole, also an internal error (``etcdserver: request timed out``) and a bad
gateway. A child write that gets one of these two is still reported as refused: an admission
webhook that fails answers 500 too, and only the pool's status can tell the user."""


def server_busy(err: KubeError) -> bool:
    """The API server said it cannot serve now; the same request may succeed later."""
    return err.status in SERVER_BUSY_STATUSES


def api_unavailable(err: BaseException) -> bool:
    """The API server could not be reached, or answered that it cannot serve now."""
    if isinstance(err, httpx.TransportError):  # refused, reset, timed out, TLS cut short
        return True
    return isinstance(err, KubeError) and err.status in RETRY_LATER_STATUSES


def report_due(failures: int) -> bool:
    """Log a failure that goes on at the 1st, 2nd, 4th, 8th... time only: fewer lines the longer
    it lasts, and still one for each doubling."""
    return failures > 0 and failures & (failures - 1) == 0


@dataclass
class FailureStreak:
    """Consecutive failed passes of one loop: the wait before the next try doubles from
    ``first_s`` up to ``max_s``; a success ends the streak."""

    first_s: float
    max_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    since: float = 0.0

    def failed(self) -> float:
        """Count a failed pass; the seconds to wait before the next one."""
        if self.failures == 0:
            self.since = self.clock()
        self.failures += 1
        grown: float = self.first_s * 2.0 ** min(self.failures - 1, 30)
        return min(grown, max(self.max_s, self.first_s))

    def succeeded(self) -> tuple[int, float] | None:
        """End the streak: (failed passes, seconds since the first) when there was one."""
        if self.failures == 0:
            return None
        ended = (self.failures, self.clock() - self.since)
        self.failures = 0
        return ended


def forbidden(err: BaseException) -> TypeGuard[KubeError]:
    """The API server refused a request for want of a permission (not a terminating namespace)."""
    return isinstance(err, KubeError) and err.status == 403 and not err.namespace_terminating
