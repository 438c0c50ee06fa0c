"""The leader lease on the API server: wait to lead (a standby), renew while leading, stop leading
when it cannot renew, release it on a graceful stop. The decisions are leader.py's; here are the
API calls (the blocking httpx client of startup.api_client) and the threads.

- :func:`wait_to_lead` runs before kopf starts, inside startup.preflight, while the ``--liveness``
  URL says what the replica waits for: one INFO line when it starts waiting (naming the holder),
  one when it leads.
- :class:`Leadership` renews the lease every retry period in a thread. A watchdog thread ends the
  process (one ERROR line, exit code 1) the moment the lease has gone unrenewed for the renew
  deadline, or as soon as the leader reads another holder in it: kopf's graceful stop takes
  seconds, and the standby may lead once the lease duration has passed; the kubelet restarts the
  container, which then waits as a standby. :meth:`Leadership.release` gives the lease up after
  kopf stopped on SIGTERM, so that a standby takes over within a retry period; the CLI makes the
  Leadership before the wait and releases in a ``finally`` around the wait and kopf, so a SIGTERM
  between the taking of the lease and kopf's start releases it too.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import Gauge

from modelpool.controllers.backoff import report_due
from modelpool.leader import Elector, LeaseConfig, RenewDeadline
from modelpool.scaling.metrics import REGISTRY

Obj = dict[str, Any]
LOST_EXIT_CODE = 1
WATCHDOG_PERIOD_S = 0.2

logger = logging.getLogger("modelpool.operator")

LEADER = Gauge(
    "modelpool_leader",
    "1 while this replica holds the leader Lease and reconciles, 0 while it waits as a standby "
    "(--leader-elect); sum over the replicas: 1.",
    ["lease"],
    registry=REGISTRY,
)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Conflict(Exception):
    """409: someone else wrote the Lease first (or created it)."""


class LeaseError(Exception):
    """The Lease could not be read or written (transport error, refusal, server error)."""


class LeaseApi:
    """GET, POST and PUT of one Lease."""

    def __init__(self, http: httpx.Client, config: LeaseConfig, timeout: float | None = None) -> None:
        self.http = http
        self.config = config
        self.timeout = timeout
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{config.namespace}/leases"

    def _call(self, method: str, path: str, body: Obj | None = None) -> httpx.Response:
        try:
            if self.timeout is None:
                return self.http.request(method, path, json=body)
            return self.http.request(method, path, json=body, timeout=self.timeout)
        except httpx.TransportError as err:
            raise LeaseError(f"{type(err).__name__}: {err}") from err

    @staticmethod
    def _answer(response: httpx.Response, what: str) -> Obj:
        if response.status_code == 409:
            raise Conflict(f"{what}: 409 Conflict")
        if response.status_code not in (200, 201):
            try:
                message = str(response.json().get("message", ""))
            except ValueError:
                message = response.text[:200]
            status = f"HTTP {response.status_code} {response.reason_phrase}"
            raise LeaseError(f"{what}: {status} {message}".strip())
        try:
            lease: Obj = response.json()
        except ValueError as err:
            raise LeaseError(f"{what}: unexpected answer {response.text[:200]!r}") from err
        return lease

    def get(self) -> Obj | None:
        """The Lease, or None when there is none."""
        response = self._call("GET", f"{self.collection}/{self.config.name}")
        if response.status_code == 404:
            return None
        return self._answer(response, f"get lease {self.config}")

    def create(self, lease: Obj) -> Obj:
        return self._answer(self._call("POST", self.collection, lease), f"create lease {self.config}")

    def update(self, lease: Obj) -> Obj:
        path = f"{self.collection}/{self.config.name}"
        return self._answer(self._call("PUT", path, lease), f"update lease {self.config}")

    def write(self, lease: Obj) -> Obj:
        """Create the Lease when ``lease`` is a new one (no resourceVersion), else update it."""
        if (lease.get("metadata") or {}).get("resourceVersion"):
            return self.update(lease)
        return self.create(lease)


def wait_to_lead(
    api: LeaseApi,
    elector: Elector,
    *,
    say: Callable[[str], None] = lambda _: None,
    unreadable: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime.datetime] = utc_now,
) -> None:
    """Return once this replica holds the lease: created when absent, taken when released or
    expired (by the local clock), with the update carrying the resourceVersion read (a 409 means
    another standby took it first: wait on). ``say`` tells the liveness and readiness URLs what it
    waits for after each read of the lease; ``unreadable`` says why a read (or the taking of an
    expired lease) failed: a standby that cannot read or take the lease cannot take over either."""
    config = elector.config
    LEADER.labels(lease=str(config)).set(0)
    started = clock()
    announced = False
    failures = 0
    while True:
        failed: LeaseError | None = None
        doing = "read"
        try:
            elector.observe(api.get(), clock())
            doing = "taken"
            if elector.may_take(clock()):
                sent = clock()  # the renew deadline counts from before the write: conservative
                elector.written(api.write(elector.claim(wall())), sent)
                LEADER.labels(lease=str(config)).set(1)
                record = elector.observed
                logger.info(
                    "leading: this replica (%s) holds the leader lease %s%s (transition %d); starting",
                    config.identity,
                    config,
                    f" after waiting {clock() - started:.0f} s" if announced else "",
                    record.transitions if record is not None else 0,
                )
                return
        except Conflict:
            pass  # another replica wrote it between our read and our write: read it again
        except LeaseError as err:
            failed = err
            failures += 1
            if report_due(failures):
                logger.warning(
                    "cannot read or take the leader lease %s (%s); trying again every %g s (tries %d)",
                    config,
                    err,
                    config.timing.retry_period_s,
                    failures,
                )
        holder = elector.holder
        if failed is not None:
            unreadable(f"the leader lease {config} cannot be {doing}: {failed}")
        elif holder:
            say(f"the leader lease {config}, held by {holder}")
            if not announced:
                announced = True
                logger.info(
                    "waiting for the leader lease %s, held by %s: this replica (%s) is a standby and "
                    "takes over when the holder releases the lease or stops renewing it for %d s",
                    config,
                    holder,
                    config.identity,
                    elector.observed.lease_duration_s if elector.observed else config.timing.lease_duration_s,
                )
        else:
            say(f"the leader lease {config}")
        sleep(config.timing.retry_period_s)


def _arm_exit_backup(after_s: float = 1.0) -> None:
    """End the process in ``after_s`` whatever happens meanwhile: the ERROR line and the flushes
    before :func:`_exit_lost` must not hold up the exit (a blocked stderr would)."""
    timer = threading.Timer(after_s, os._exit, (LOST_EXIT_CODE,))
    timer.daemon = True
    timer.start()


def _exit_lost(why: str) -> None:
    """Stop leading at once: the one ERROR line, then the process ends (no graceful kopf stop,
    which could outlast the lease)."""
    for handler in logging.getLogger().handlers + logger.handlers:
        with contextlib.suppress(Exception):  # the exit must happen whatever the handler does
            handler.flush()
    sys.stderr.flush()
    os._exit(LOST_EXIT_CODE)


class Leadership:
    """This replica leads: renew the lease every retry period, stop leading when it cannot."""

    def __init__(
        self,
        api: LeaseApi,
        elector: Elector,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = utc_now,
        on_lost: Callable[[str], None] = _exit_lost,
    ) -> None:
        self.api = api
        self.elector = elector
        self.config = elector.config
        self.clock = clock
        self.wall = wall
        self.on_lost = on_lost
        self.deadline = RenewDeadline(self.config.timing.renew_deadline_s, self._taken_at())
        self.last_problem = ""
        self.lost: str | None = None
        self._lost_lock = threading.Lock()
        self._write_lock = threading.Lock()
        """Held by each renewal and by the release: a renewal still in flight when the leader stops
        can never write the lease back after it was released."""
        self._request_timeout_s = api.timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _taken_at(self) -> float:
        """When the lease was last written: its taking, in wait_to_lead (same clock); now when this
        replica does not hold it yet (a Leadership made before the taking)."""
        elector = self.elector
        return elector.observed_at if elector.leading and elector.observed_at is not None else self.clock()

    def renew(self) -> bool:
        """One try to renew; whether it renewed. The lease last written is updated as it is (its
        resourceVersion: client-go's fast path); on a conflict or an error it is read again, and
        if it names another holder, leadership is lost at once."""
        with self._write_lock:
            if self.lost is not None or self._stop.is_set():
                return False  # stopping: the lease is about to be released, never taken back
            # No answer after the deadline could save the lease: wait for none longer than that.
            left = self.deadline.left(self.clock())
            self.api.timeout = max(0.1, min(self._request_timeout_s or left, left))
            return self._renew()

    def _renew(self) -> bool:
        try:
            try:
                if self.elector.lease is not None and self.elector.leading:
                    sent = self.clock()
                    self._written(self.api.update(self.elector.claim(self.wall())), sent)
                    return True
            except (Conflict, LeaseError):
                pass  # the slow path reads it
            self.elector.observe(self.api.get(), self.clock())
            holder = self.elector.holder
            if holder not in ("", self.config.identity):
                self.lose(f"the lease is held by {holder} now")
                return False
            sent = self.clock()
            self._written(self.api.write(self.elector.claim(self.wall())), sent)
            return True
        except (Conflict, LeaseError) as err:
            self.last_problem = str(err)
            return False

    def _written(self, lease: Obj, sent: float) -> None:
        """A renewal the API server accepted: the deadline counts from when it was sent (the
        standbys saw the lease change no earlier)."""
        self.elector.written(lease, sent)
        self.deadline.renewed(sent)
        self.last_problem = ""

    def check(self) -> bool:
        """Whether this replica still leads: False, and leadership lost, once the renew deadline
        has passed since the last renewal."""
        if self.lost is None and self.deadline.passed(self.clock()):
            why = f"it was not renewed for {self.config.timing.renew_deadline_s:g} s"
            self.lose(f"{why} ({self.last_problem})" if self.last_problem else why)
        return self.lost is None

    def lose(self, why: str) -> None:
        """Stop leading: one ERROR line, then ``on_lost`` (the process exits)."""
        with self._lost_lock:
            if self.lost is not None:
                return
            self.lost = why
        self._stop.set()
        if self.on_lost is _exit_lost:
            _arm_exit_backup()
        LEADER.labels(lease=str(self.config)).set(0)
        logger.error(
            "lost the leader lease %s: %s; this replica (%s) stops leading now and exits with code %d "
            "(restarted, it waits as a standby)",
            self.config,
            why,
            self.config.identity,
            LOST_EXIT_CODE,
        )
        self.on_lost(why)

    def _renew_loop(self) -> None:
        failures = 0
        retry = self.config.timing.retry_period_s
        # Renewals are paced from when the last one was sent, not from when its answer came: a slow
        # API server then costs the deadline one request's latency, not two plus a retry period.
        next_at = self.deadline.renewed_at + retry
        while not self._stop.wait(max(0.0, next_at - self.clock())):
            tried_at = self.clock()
            if self.renew():
                failures = 0
                next_at = self.deadline.renewed_at + retry
                continue
            next_at = tried_at + retry
            if self.lost is None:
                failures += 1
                if failures == 1:
                    logger.warning(
                        "cannot renew the leader lease %s (%s); trying every %g s, this replica stops "
                        "leading if it is not renewed within %g s",
                        self.config,
                        self.last_problem,
                        self.config.timing.retry_period_s,
                        self.deadline.left(self.clock()),
                    )

    def _watchdog(self) -> None:
        while not self._stop.wait(WATCHDOG_PERIOD_S):
            if not self.check():
                return

    def start(self) -> Leadership:
        """Renew in the background, from now on; the renew deadline counts from the taking."""
        self.deadline.renewed(self._taken_at())
        for target, name in ((self._renew_loop, "leader-renew"), (self._watchdog, "leader-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop renewing (the lease stays this replica's until it expires or is released)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.config.timing.renew_deadline_s)
        self._threads = []

    def release(self) -> bool:
        """Give the lease up (no holder), when it is still this replica's: a standby takes over at
        its next look, not after the lease duration. Whether it was released. Nothing to do (no
        request) for a replica that never wrote itself into the lease: a standby stopped while it
        waits, or one that lost the lease."""
        if self.lost is not None or not self.elector.claimed:
            return False
        self._stop.set()  # a renewal that starts from now on writes nothing
        with self._write_lock:  # and one in flight has finished
            self.api.timeout = self._request_timeout_s
            return self._release()

    def _release(self) -> bool:
        for _ in range(3):  # a conflict: someone wrote it meanwhile; read it again
            try:
                self.elector.observe(self.api.get(), self.clock())
                body = self.elector.release(self.wall())
                if body is None:
                    return False  # not ours (any more): nothing to give up
                self.elector.written(self.api.update(body), self.clock())
                LEADER.labels(lease=str(self.config)).set(0)
            except Conflict:
                continue
            except LeaseError as err:
                logger.warning(
                    "cannot release the leader lease %s (%s): a standby takes over once it expires",
                    self.config,
                    err,
                )
                return False
            logger.info("released the leader lease %s: a standby takes over now", self.config)
            return True
        return False
