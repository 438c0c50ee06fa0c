"""Per-endpoint circuit breaker: closed -> open after N failures -> probed -> half-open -> closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Takes a failing endpoint out and lets it back in after a successful probe.

    * closed: every request may go; ``failure_threshold`` consecutive failures open it.
    * open: nothing goes until ``open_until``; then :meth:`probe_due` says a probe (an
      active health check, never a user request) should run.  A failed probe reopens it
      with the wait doubled (up to ``max_open_seconds``); a good one half-opens it.
    * half-open: one request at a time may go; its success closes the breaker, its
      failure reopens it.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        open_seconds: float = 1.0,
        max_open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self._wait = open_seconds
        self._trial_in_flight = False

    def configure(self, failure_threshold: int, open_seconds: float, max_open_seconds: float) -> None:
        """New thresholds from a config push, keeping the state: an open breaker keeps its deadline
        (at most the new longest wait from now), and the next opening uses the new waits."""
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self._wait = min(max(self._wait, open_seconds), max_open_seconds)
        if self.state is BreakerState.OPEN:
            self.open_until = min(self.open_until, self._clock() + max_open_seconds)
        elif self.state is BreakerState.CLOSED and self.failures >= failure_threshold:
            self._open()  # the lower threshold is already reached

    def allows(self) -> bool:
        """May a request be sent now?"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN:
            return not self._trial_in_flight
        return False

    def on_send(self) -> None:
        """A request is about to be sent (claims the half-open trial slot)."""
        if self.state is BreakerState.HALF_OPEN:
            self._trial_in_flight = True

    def on_cancel(self) -> None:
        """A request sent here was abandoned before its answer (its client left): neither a
        success nor a failure, but a half-open breaker's trial slot is free again."""
        self._trial_in_flight = False

    def probe_due(self) -> bool:
        """Open and its wait is over: time for an active probe."""
        return self.state is BreakerState.OPEN and self._clock() >= self.open_until

    def on_success(self) -> None:
        self.failures = 0
        self._trial_in_flight = False
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self._wait = self.open_seconds

    def on_failure(self) -> None:
        self._trial_in_flight = False
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold
        ):
            self._open()

    def on_probe(self, ok: bool) -> None:
        """Result of an active probe while open."""
        if self.state is not BreakerState.OPEN:
            return
        if ok:
            self.state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        else:
            self._wait = min(self._wait * 2, self.max_open_seconds)
            self.open_until = self._clock() + self._wait

    def _open(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._wait = min(self._wait * 2, self.max_open_seconds)
        self.state = BreakerState.OPEN
        self.open_until = self._clock() + self._wait
