"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's tools/leaderelection does
it: the decisions only (may this replica take the lease, has the holder's lease expired, what to
write, has the renew deadline passed). No I/O and no clock of their own: the caller passes its
monotonic time (``now``, seconds) and the wall time (``wall``, for the Lease's timestamps), so the
rules are tested with a fake clock. leadership.py makes the API calls and runs the threads.

The expiry rule is client-go's: a lease held by another replica has expired only when it has not
changed for its ``leaseDurationSeconds`` by THIS process's clock, counted from when this process
last saw it change. The holder's renewTime is never compared with the local clock: the two
machines' clocks may disagree by more than a lease duration.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

LEASE_DURATION_S = 15
"""How long a standby waits, after it last saw the lease change, before it takes it over."""
RENEW_DEADLINE_S = 10.0
"""How long the leader keeps trying to renew before it stops leading (exits): less than the lease
duration, so that it has stopped before any standby may take the lease."""
RETRY_PERIOD_S = 2.0
"""How often the leader renews the lease, and a standby looks at it."""
JITTER_FACTOR = 1.2
"""client-go's check: the renew deadline must leave room for more than one try (deadline > 1.2 x
retry period)."""
DEFAULT_LEASE_NAME = "modelpool-operator"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""The pod's namespace, as the kubelet mounts it with the service account token."""
LEASE_API = "coordination.k8s.io/v1"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Timing:
    """client-go's LeaseDuration, RenewDeadline and RetryPeriod, in seconds."""

    lease_duration_s: int = LEASE_DURATION_S
    renew_deadline_s: float = RENEW_DEADLINE_S
    retry_period_s: float = RETRY_PERIOD_S

    def problems(self) -> list[str]:
        """What is wrong with the three, one sentence each naming the flags (client-go's checks)."""
        durations = (self.lease_duration_s, self.renew_deadline_s, self.retry_period_s)
        if not all(math.isfinite(d) and d > 0 for d in durations):
            # NaN compares false with everything: it would pass every check below, and a renew
            # deadline of NaN never passes (a leader that cannot renew would never stop).
            return [
                "--leader-election-lease-duration, -renew-deadline and -retry-period must be finite "
                f"numbers of seconds above 0, got {durations[0]:g}, {durations[1]:g} and {durations[2]:g} "
                "(defaults 15, 10 and 2)"
            ]
        problems = []
        if self.lease_duration_s <= self.renew_deadline_s:
            problems.append(
                f"--leader-election-lease-duration={self.lease_duration_s} is not longer than "
                f"--leader-election-renew-deadline={self.renew_deadline_s:g}: a leader that cannot "
                "renew must stop before a standby may take the lease (defaults 15 and 10)"
            )
        if self.renew_deadline_s <= JITTER_FACTOR * self.retry_period_s:
            problems.append(
                f"--leader-election-renew-deadline={self.renew_deadline_s:g} is not longer than "
                f"{JITTER_FACTOR:g} x --leader-election-retry-period={self.retry_period_s:g}: the "
                "leader would get only one try to renew (defaults 10 and 2)"
            )
        return problems


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease this replica competes for, under which identity, with which timing."""

    namespace: str
    name: str
    identity: str
    timing: Timing = Timing()

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def new_identity(hostname: str | None = None) -> str:
    """This replica's holder identity: the host name (a pod's name) and a random suffix, so that a
    restarted container (same pod name) is a new holder, as client-go's ``hostname_<uuid>``."""
    return f"{hostname or socket.gethostname()}_{secrets.token_hex(4)}"


def lease_namespace(
    flag: str | None, environ: dict[str, str] | None = None, sa_file: Path | None = None
) -> str | None:
    """The Lease's namespace: the flag, else the pod's namespace (the service account's namespace
    file, else ``$POD_NAMESPACE``); None when none says."""
    if flag:
        return flag
    env = dict(os.environ) if environ is None else environ
    try:
        mounted = (sa_file or SA_NAMESPACE_FILE).read_text().strip()
    except OSError:
        mounted = ""
    return mounted or env.get(POD_NAMESPACE_ENV) or None


def micro_time(wall: datetime.datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC), as the Lease's timestamps are written."""
    return wall.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, and its resourceVersion: any change of either is a renewal."""

    holder: str
    lease_duration_s: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, lease: Obj) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion", "")),
        )


class Elector:
    """One replica's view of the lease: the record it last observed, and when it saw it change by
    its own clock (client-go's observedRecord and observedTime)."""

    def __init__(self, config: LeaseConfig) -> None:
        self.config = config
        self.observed: LeaseRecord | None = None
        self.observed_at: float | None = None
        self.lease: Obj | None = None
        """The Lease as last read or written (updates carry its resourceVersion)."""
        self.claimed = False
        """Whether this replica has made a write that names it the holder (:meth:`claim`): from
        then on it may hold the lease, even before it knows (a SIGTERM while the answer was on its
        way), and gives it up when it stops."""

    @property
    def identity(self) -> str:
        return self.config.identity

    def observe(self, lease: Obj | None, now: float) -> LeaseRecord | None:
        """Take note of the Lease as read (None: there is none). A record that differs from the
        one observed before (holder, times, transitions or resourceVersion) restarts the clock."""
        self.lease = lease
        if lease is None:
            self.observed, self.observed_at = None, now
            return None
        record = LeaseRecord.of(lease)
        if record != self.observed or self.observed_at is None:
            self.observed, self.observed_at = record, now
        return record

    @property
    def holder(self) -> str:
        """Who holds the lease as last observed ("" when nobody does)."""
        return self.observed.holder if self.observed is not None else ""

    @property
    def leading(self) -> bool:
        """Whether the lease, as last observed or written, is this replica's."""
        return self.holder == self.identity

    def expired(self, now: float) -> bool:
        """Whether the observed lease has not changed for its duration by the local clock."""
        if self.observed is None or self.observed_at is None:
            return True
        duration = self.observed.lease_duration_s or self.config.timing.lease_duration_s
        return now >= self.observed_at + duration

    def may_take(self, now: float) -> bool:
        """Whether this replica may write itself as the holder: there is no lease, nobody holds it
        (released), it holds it already, or the holder let it expire."""
        return self.observed is None or self.holder in ("", self.identity) or self.expired(now)

    def claim(self, wall: datetime.datetime) -> Obj:
        """The Lease to write to take or renew the lease observed last: the one read (kept whole,
        with its resourceVersion: the update fails with 409 Conflict if anyone wrote it since),
        else a new one to create. A new holder sets acquireTime and counts a transition."""
        self.claimed = True
        stamp = micro_time(wall)
        old = self.observed
        ours = old is not None and old.holder == self.identity
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.config.timing.lease_duration_s,
            "acquireTime": (old.acquire_time if ours and old is not None else None) or stamp,
            "renewTime": stamp,
            "leaseTransitions": (old.transitions if ours else old.transitions + 1) if old is not None else 0,
        }
        if self.lease is None:
            return {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": spec,
            }
        body = copy.deepcopy(self.lease)
        body["spec"] = spec
        return body

    def written(self, lease: Obj, now: float) -> None:
        """The API server accepted ``lease`` (the answer to a create or update): observe it."""
        self.lease = lease
        self.observed, self.observed_at = LeaseRecord.of(lease), now

    def release(self, wall: datetime.datetime) -> Obj | None:
        """The Lease to write to give up the lease last read (client-go's ReleaseOnCancel): no
        holder, a duration of 1 s, the transitions kept; None when it is not this replica's."""
        if self.lease is None or not self.leading or self.observed is None:
            return None
        stamp = micro_time(wall)
        body = copy.deepcopy(self.lease)
        body["spec"] = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": self.observed.transitions,
        }
        return body


@dataclass
class RenewDeadline:
    """The leader's watch on itself: it stops leading once it has not renewed for the deadline."""

    deadline_s: float
    renewed_at: float

    def renewed(self, now: float) -> None:
        self.renewed_at = now

    def passed(self, now: float) -> bool:
        return now - self.renewed_at >= self.deadline_s

    def left(self, now: float) -> float:
        return self.deadline_s - (now - self.renewed_at)
