"""Leader election on a Lease (client-go's rules): a standby takes the lease only when it is
released or has not changed for its duration by the standby's own clock; takeovers are updates
with the resourceVersion read (a 409 means another won); the leader renews, stops leading once it
cannot renew for the renew deadline or reads another holder, and releases the lease on a graceful
stop.

The clock is fake (monotonic seconds, advanced by the waits' ``sleep``); the API server is a fake
Lease store behind httpx.MockTransport that checks resourceVersions as the real one does.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelpool import leader
from modelpool.cli import build_parser
from modelpool.devcluster.triton import free_port
from modelpool.kubelogin import Credentials
from modelpool.leader import Elector, LeaseConfig, LeaseRecord, RenewDeadline, Timing
from modelpool.leadership import Leadership, LeaseApi, wait_to_lead
from modelpool.permissions import SSAR_PATH, accesses
from modelpool.scaling.metrics import REGISTRY
from modelpool.startup import Readiness, config_problems, preflight
from unit.operator.helpers import operator_lines

Obj = dict[str, Any]
NS, NAME = "ops", "modelpool-operator"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
ME, OTHER, RIVAL = "op-a_1111", "op-b_2222", "op-c_3333"
WALL = datetime.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
WALL_TEXT = "2030-05-06T07:08:09.123456Z"
PAST, FUTURE = "2001-01-01T00:00:00.000000Z", "2099-01-01T00:00:00.000000Z"


def config(identity: str = ME, timing: Timing | None = None) -> LeaseConfig:
    return LeaseConfig(NS, NAME, identity, timing or Timing())


def lease(holder: str, rv: int, renew: str = PAST, duration: int = 15, transitions: int = 3) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": str(rv), "labels": {"keep": "me"}},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": PAST,
            "renewTime": renew,
            "leaseTransitions": transitions,
        },
    }


@dataclass
class Clock:
    """Monotonic seconds; ``sleep`` advances them and runs what is due (another replica's write)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    each_sleep: Callable[[], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.each_sleep is not None:
            self.each_sleep()


@dataclass
class FakeLeases:
    """The API server's Lease store: 404 when absent, 409 on a create of an existing Lease or an
    update whose resourceVersion is not the current one; ``fail`` answers 500 to the next requests;
    ``before_write`` runs before a client's write is applied (another replica's write in between)."""

    lease: Obj | None = None
    rv: int = 100
    fail: int = 0
    before_write: Callable[[], None] | None = None
    writes: list[tuple[str, Obj]] = field(default_factory=list)
    requests: int = 0

    def store(self, body: Obj) -> Obj:
        self.rv += 1
        stored = json.loads(json.dumps(body))
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = stored
        return stored

    def held_by(self, holder: str, renew: str = PAST, duration: int = 15) -> None:
        """Another replica writes the lease (takes or renews it)."""
        transitions = (self.lease or {}).get("spec", {}).get("leaseTransitions", 0)
        self.store(lease(holder, 0, renew=renew, duration=duration, transitions=transitions))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        path = request.url.path
        if self.fail > 0:
            self.fail -= 1
            return httpx.Response(500, json={"kind": "Status", "message": "etcdserver: request timed out"})
        if request.method == "GET" and path == f"{LEASES}/{NAME}":
            return httpx.Response(200, json=self.lease) if self.lease else httpx.Response(404, json={})
        if request.method in ("POST", "PUT"):
            body = json.loads(request.content)
            if self.before_write is not None:
                hook, self.before_write = self.before_write, None
                hook()
            if request.method == "POST":
                assert path == LEASES
                if self.lease is not None:
                    return httpx.Response(409, json={"kind": "Status", "reason": "AlreadyExists"})
            else:
                assert path == f"{LEASES}/{NAME}"
                if self.lease is None:
                    return httpx.Response(404, json={})
                if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                    return httpx.Response(409, json={"kind": "Status", "reason": "Conflict"})
            self.writes.append((request.method, body))
            return httpx.Response(201 if request.method == "POST" else 200, json=self.store(body))
        return httpx.Response(404, json={})

    @property
    def spec(self) -> Obj:
        assert self.lease is not None
        spec: Obj = self.lease["spec"]
        return spec


def api(fake: FakeLeases, cfg: LeaseConfig | None = None) -> LeaseApi:
    return LeaseApi(
        httpx.Client(base_url="https://k8s.test", transport=httpx.MockTransport(fake)), cfg or config()
    )


def _leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("modelpool_leader", {"lease": f"{NS}/{NAME}"})


pytestmark = pytest.mark.usefixtures("operator_info_logs")


# --- the expiry rule (leader.py, a fake clock) -------------------------------------------------


@pytest.mark.parametrize("renew", [PAST, FUTURE], ids=["renewTime-long-past", "renewTime-far-future"])
def test_a_lease_renewed_by_another_keeps_you_waiting_whatever_its_renew_time_says(renew: str) -> None:
    elector = Elector(config())
    for step in range(40):  # 80 s of renewals, each 2 s apart: never expired
        elector.observe(lease(OTHER, 200 + step, renew=renew), now=2.0 * step)
        assert not elector.may_take(2.0 * step + 1.9)
        assert elector.holder == OTHER


@pytest.mark.parametrize("renew", [PAST, FUTURE], ids=["renewTime-long-past", "renewTime-far-future"])
def test_an_unchanged_lease_is_yours_after_its_duration_by_your_clock(renew: str) -> None:
    elector = Elector(config())
    stale = lease(OTHER, 7, renew=renew)
    elector.observe(stale, now=50.0)  # first seen now: its renewTime does not count
    for now in (50.0, 60.0, 64.9):
        elector.observe(stale, now)  # seen again unchanged: the clock is not restarted
        assert not elector.may_take(now)
    elector.observe(stale, 65.0)
    assert elector.may_take(65.0)


def test_any_change_restarts_the_clock_and_the_holders_duration_counts() -> None:
    elector = Elector(config())  # ours is 15 s
    elector.observe(lease(OTHER, 1, duration=40), now=0.0)
    assert not elector.may_take(39.9)
    # Same spec, new resourceVersion (the holder wrote it again): a change.
    elector.observe(lease(OTHER, 2, duration=40), now=30.0)
    assert not elector.may_take(69.9)
    assert elector.may_take(70.0)


def test_an_absent_or_released_lease_may_be_taken_at_once() -> None:
    elector = Elector(config())
    assert elector.observe(None, now=0.0) is None and elector.may_take(0.0)
    elector.observe(lease("", 3, duration=1), now=1.0)
    assert elector.may_take(1.0)
    elector.observe(lease(ME, 4), now=2.0)
    assert elector.may_take(2.0) and elector.leading


# --- what is written ---------------------------------------------------------------------------


def test_a_takeover_is_an_update_of_the_lease_read_with_a_new_transition() -> None:
    elector = Elector(config())
    elector.observe(lease(OTHER, 41, transitions=3), now=0.0)
    body = elector.claim(WALL)
    assert body["metadata"]["resourceVersion"] == "41"  # optimistic concurrency
    assert body["metadata"]["labels"] == {"keep": "me"}  # the rest of the object is kept
    assert body["spec"] == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": WALL_TEXT,
        "renewTime": WALL_TEXT,
        "leaseTransitions": 4,
    }


def test_a_renewal_keeps_acquire_time_and_transitions() -> None:
    elector = Elector(config())
    elector.observe(lease(ME, 9, transitions=4), now=0.0)
    spec = elector.claim(WALL)["spec"]
    assert (spec["acquireTime"], spec["renewTime"], spec["leaseTransitions"]) == (PAST, WALL_TEXT, 4)


def test_an_absent_lease_is_created_with_no_transition() -> None:
    elector = Elector(config())
    elector.observe(None, now=0.0)
    body = elector.claim(WALL)
    assert body["metadata"] == {"name": NAME, "namespace": NS}
    assert body["spec"]["holderIdentity"] == ME and body["spec"]["leaseTransitions"] == 0


def test_release_writes_no_holder_and_keeps_the_transitions() -> None:
    elector = Elector(config())
    elector.observe(lease(ME, 12, transitions=5), now=0.0)
    body = elector.release(WALL)
    assert body is not None and body["metadata"]["resourceVersion"] == "12"
    assert body["spec"] == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": WALL_TEXT,
        "renewTime": WALL_TEXT,
        "leaseTransitions": 5,
    }
    elector.observe(lease(OTHER, 13), now=1.0)
    assert elector.release(WALL) is None  # not ours: nothing to give up


def test_record_of_a_lease_without_spec_fields() -> None:
    record = LeaseRecord.of({"metadata": {"resourceVersion": "5"}, "spec": {}})
    assert (record.holder, record.lease_duration_s, record.transitions) == ("", 0, 0)


def test_the_renew_deadline() -> None:
    deadline = RenewDeadline(10.0, renewed_at=100.0)
    assert not deadline.passed(109.9) and deadline.passed(110.0)
    deadline.renewed(105.0)
    assert not deadline.passed(114.9) and deadline.left(114.0) == pytest.approx(1.0)


# --- waiting to lead (leadership.wait_to_lead) -------------------------------------------------


def test_an_absent_lease_is_created_and_the_replica_leads_at_once(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock = FakeLeases(), Clock()
    elector = Elector(config())
    wait_to_lead(api(fake), elector, sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    assert [method for method, _ in fake.writes] == ["POST"]
    assert fake.spec["holderIdentity"] == ME and clock.sleeps == []
    assert elector.leading and elector.lease == fake.lease
    assert _leader_gauge() == 1
    (line,) = operator_lines(caplog, "INFO")
    assert line.startswith(f"leading: this replica ({ME}) holds the leader lease {NS}/{NAME}")


def test_a_standby_waits_while_the_holder_renews_then_takes_over_after_the_lease_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, clock = FakeLeases(), Clock()
    fake.held_by(OTHER, renew=FUTURE)
    said: list[str] = []
    renewals = {"left": 20}

    def gauge_while_waiting(text: str) -> None:
        said.append(text)
        assert _leader_gauge() == 0  # a standby

    def other_renews() -> None:  # the holder renews every 2 s for 40 s, then dies
        if renewals["left"] > 0:
            renewals["left"] -= 1
            fake.held_by(OTHER, renew=FUTURE)

    clock.each_sleep = other_renews
    started = clock.now
    wait_to_lead(
        api(fake),
        Elector(config()),
        say=gauge_while_waiting,
        sleep=clock.sleep,
        clock=clock,
        wall=lambda: WALL,
    )
    # 40 s of renewals (each seen within 2 s), then 15 s unchanged by the standby's clock.
    assert 40 + 15 <= clock.now - started <= 40 + 15 + 2 * 2
    assert set(clock.sleeps) == {2.0}
    assert fake.spec["holderIdentity"] == ME and fake.spec["leaseTransitions"] == 1
    assert [method for method, _ in fake.writes] == ["PUT"]
    assert set(said) == {f"the leader lease {NS}/{NAME}, held by {OTHER}"}
    waiting, leading = operator_lines(caplog, "INFO")  # one line each, not one per look
    assert waiting.startswith(f"waiting for the leader lease {NS}/{NAME}, held by {OTHER}: ")
    assert (
        leading.startswith(f"leading: this replica ({ME}) holds the leader lease")
        and "after waiting" in leading
    )
    assert operator_lines(caplog, "WARNING") == []


def test_a_released_lease_is_taken_at_the_next_look() -> None:
    fake, clock = FakeLeases(), Clock()
    fake.held_by(OTHER)

    def release() -> None:
        fake.store(lease("", 0, duration=1, transitions=3))

    clock.each_sleep = release
    wait_to_lead(api(fake), Elector(config()), sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    assert clock.sleeps == [2.0]
    assert fake.spec["holderIdentity"] == ME and fake.spec["leaseTransitions"] == 4


def test_a_409_means_another_standby_won_and_this_one_waits_on() -> None:
    fake, clock = FakeLeases(), Clock()
    fake.held_by(OTHER)  # seen first now: it expires for us 15 s later
    # Just before our takeover is applied, a rival standby takes it (and renews it from then on).
    rival_leads = {"on": False}

    def rival_takes() -> None:
        rival_leads["on"] = True
        fake.held_by(RIVAL)

    fake.before_write = rival_takes
    looks = {"n": 0}

    def each_sleep() -> None:
        looks["n"] += 1
        if rival_leads["on"] and looks["n"] < 30:
            fake.held_by(RIVAL)  # the rival renews
        if looks["n"] == 30:
            fake.store(lease("", 0, duration=1))  # and releases it after a while

    clock.each_sleep = each_sleep
    wait_to_lead(api(fake), Elector(config()), sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    assert len(clock.sleeps) == 30  # waited on the rival, took it only once released
    assert fake.spec["holderIdentity"] == ME
    assert [method for method, _ in fake.writes] == ["PUT"]  # the refused PUT is not stored


def test_two_standbys_creating_the_lease_at_once_one_wins() -> None:
    fake, clock = FakeLeases(), Clock()
    fake.before_write = lambda: fake.held_by(RIVAL)  # the rival's create lands first
    clock.each_sleep = lambda: fake.held_by(RIVAL)  # and it renews
    elector = Elector(config())
    with pytest.raises(_Enough):
        wait_to_lead(api(fake), elector, sleep=_stop_after(clock, 20), clock=clock, wall=lambda: WALL)
    assert fake.spec["holderIdentity"] == RIVAL and not elector.leading


class _Enough(Exception):
    pass


def _stop_after(clock: Clock, sleeps: int) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if len(clock.sleeps) >= sleeps:
            raise _Enough
        clock.sleep(seconds)

    return sleep


def test_api_errors_while_waiting_are_one_warning_per_doubling(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock = FakeLeases(fail=7), Clock()
    wait_to_lead(api(fake), Elector(config()), sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    assert len(clock.sleeps) == 7 and fake.spec["holderIdentity"] == ME
    warnings = operator_lines(caplog, "WARNING")
    assert len(warnings) == 3  # the 1st, 2nd and 4th failed tries
    assert "HTTP 500" in warnings[0] and "etcdserver: request timed out" in warnings[0]


# --- leading: renewal, the renew deadline, release (leadership.Leadership) ----------------------


def _leading(fake: FakeLeases, clock: Clock, timing: Timing | None = None) -> tuple[Leadership, list[str]]:
    cfg = config(timing=timing)
    elector = Elector(cfg)
    wait_to_lead(api(fake, cfg), elector, sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    lost: list[str] = []
    return Leadership(api(fake, cfg), elector, clock=clock, wall=lambda: WALL, on_lost=lost.append), lost


def test_renewals_update_the_lease_written_last() -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, lost = _leading(fake, clock)
    requests = fake.requests
    for _ in range(5):
        clock.now += 2
        assert leadership.renew() and leadership.check()
    assert fake.requests - requests == 5  # one PUT each, no GET (client-go's fast path)
    assert [m for m, _ in fake.writes] == ["POST"] + ["PUT"] * 5
    assert fake.spec["holderIdentity"] == ME and fake.spec["leaseTransitions"] == 0
    assert lost == []


def test_a_conflict_while_renewing_reads_the_lease_again() -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, lost = _leading(fake, clock)
    # Someone edits the Lease (a label): our resourceVersion is stale, the lease still ours.
    assert fake.lease is not None
    fake.store(json.loads(json.dumps(fake.lease)))
    clock.now += 2
    assert leadership.renew()
    assert [m for m, _ in fake.writes][-1:] == ["PUT"] and fake.spec["holderIdentity"] == ME
    assert lost == []


def test_a_lease_taken_by_another_stops_leading_at_once(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, lost = _leading(fake, clock)
    fake.held_by(OTHER)  # e.g. this replica was paused longer than the lease duration
    clock.now += 2
    assert not leadership.renew()
    assert lost == [f"the lease is held by {OTHER} now"]
    assert not leadership.check() and not leadership.renew()  # once lost, nothing more
    assert lost == [f"the lease is held by {OTHER} now"]
    (error,) = operator_lines(caplog, "ERROR")
    assert f"lost the leader lease {NS}/{NAME}: the lease is held by {OTHER} now" in error
    assert "exits with code 1" in error
    assert _leader_gauge() == 0
    assert fake.spec["holderIdentity"] == OTHER  # nothing written over it


def test_the_leader_stops_once_it_cannot_renew_for_the_renew_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, lost = _leading(fake, clock)
    renewed_at = clock.now
    fake.fail = 1000  # the API server answers 500 from now on
    for offset in (2.0, 4.0, 6.0, 8.0, 9.9):  # a try each retry period: all fail
        clock.now = renewed_at + offset
        assert not leadership.renew()
        assert leadership.check(), f"stopped after {clock.now - renewed_at} s"
    clock.now = renewed_at + 10.0
    assert not leadership.check()
    assert len(lost) == 1 and lost[0].startswith("it was not renewed for 10 s (get lease ops/"), lost
    assert "HTTP 500" in lost[0] and "etcdserver: request timed out" in lost[0]
    (error,) = operator_lines(caplog, "ERROR")
    assert "it was not renewed for 10 s" in error
    # The standby may take it 15 s after it last saw it change: the leader stopped 5 s before.
    standby = Elector(config(OTHER))
    standby.observe(fake.lease, now=renewed_at)
    assert not standby.may_take(renewed_at + 10.0) and standby.may_take(renewed_at + 15.0)


def test_the_renew_deadline_counts_from_the_takeover_not_from_the_start_of_renewing() -> None:
    fake, clock = FakeLeases(), Clock()
    elector = Elector(config())
    wait_to_lead(api(fake), elector, sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    taken = clock.now
    clock.now += 3  # kopf's imports, the liveness port handed over...
    lost: list[str] = []
    leadership = Leadership(api(fake), elector, clock=clock, wall=lambda: WALL, on_lost=lost.append)
    clock.now = taken + 9.9
    assert leadership.check()
    clock.now = taken + 10
    assert not leadership.check() and len(lost) == 1


def _until(probe: Callable[[], object], what: str, limit_s: float = 10.0) -> None:
    """Wait (real time) for the background threads to do something; the limit only catches a hang."""
    deadline = time.monotonic() + limit_s
    while not probe():
        assert time.monotonic() < deadline, f"not within {limit_s:g} s: {what}"
        time.sleep(0.01)


class _RecordedWaits(threading.Event):
    """A Leadership's ``_stop``: records each wait's timeout with the thread that waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[str, float | None]] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append((threading.current_thread().name, timeout))
        return super().wait(timeout)


def test_the_threads_renew_and_end_leadership_at_the_deadline() -> None:
    """The threads run on the injected clock, which stands still unless the test moves it: the
    renew thread renews each retry period, the watchdog ends leadership once the clock reaches the
    renew deadline after the last renewal, not a moment before."""
    timing = Timing(lease_duration_s=2, renew_deadline_s=0.6, retry_period_s=0.1)
    fake, clock = FakeLeases(), Clock()
    cfg = config(timing=timing)
    elector = Elector(cfg)
    wait_to_lead(api(fake, cfg), elector, sleep=clock.sleep, clock=clock, wall=lambda: WALL)
    taken = clock.now
    lost: list[float] = []
    leadership = Leadership(
        api(fake, cfg), elector, clock=clock, wall=lambda: WALL, on_lost=lambda _: lost.append(clock())
    )
    stop = leadership._stop = _RecordedWaits()
    looks: list[float] = []
    check = leadership.check

    def watchdog_check() -> bool:
        looks.append(clock())
        return check()

    leadership.check = watchdog_check  # type: ignore[method-assign]
    writes = len(fake.writes)
    leadership.start()
    try:
        _until(lambda: len(fake.writes) >= writes + 5, "five renewals")
        renew_waits = [t for name, t in stop.waits if name == "leader-renew"][:5]
        assert renew_waits == [pytest.approx(0.1)] * 5  # one renewal each retry period
        assert lost == []
        fake.fail = 10**6  # renewals fail from now on
        _until(lambda: fake.fail <= 10**6 - 2, "a renewal that failed (its PUT and GET)")
        assert leadership.deadline.renewed_at == taken  # the clock stood still
        clock.now = taken + 0.59
        seen = len(looks)
        _until(lambda: len(looks) >= seen + 2 or lost, "two looks of the watchdog")
        assert lost == []  # not before the deadline
        clock.now = taken + 0.6
        _until(lambda: lost, "leadership lost")
    finally:
        leadership.stop()
    assert lost == [taken + 0.6]  # at the renew deadline after the last renewal
    assert leadership.lost is not None and leadership.lost.startswith("it was not renewed for 0.6 s")


def test_release_hands_the_lease_to_a_standby_at_once(caplog: pytest.LogCaptureFixture) -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, lost = _leading(fake, clock)
    clock.now += 2
    assert leadership.renew()
    assert leadership.release()
    assert fake.spec["holderIdentity"] == "" and fake.spec["leaseDurationSeconds"] == 1
    assert (
        operator_lines(caplog, "INFO")[-1]
        == f"released the leader lease {NS}/{NAME}: a standby takes over now"
    )
    assert _leader_gauge() == 0
    standby = Elector(config(OTHER))
    standby.observe(fake.lease, now=clock.now)
    assert standby.may_take(clock.now)
    assert lost == []


def test_release_leaves_a_lease_another_holds_alone() -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, _ = _leading(fake, clock)
    fake.held_by(OTHER)
    writes = len(fake.writes)
    assert not leadership.release()
    assert fake.spec["holderIdentity"] == OTHER and len(fake.writes) == writes


def test_release_retries_a_conflict() -> None:
    fake, clock = FakeLeases(), Clock()
    leadership, _ = _leading(fake, clock)
    assert fake.lease is not None
    edited = json.loads(json.dumps(fake.lease))

    def edit() -> None:  # a label edited between our GET and PUT
        fake.store(edited)

    fake.before_write = edit
    assert leadership.release()
    assert fake.spec["holderIdentity"] == ""


# --- the preflight, the permissions, the flags -------------------------------------------------


@dataclass
class FakeApiServer:
    """/api answers; SelfSubjectAccessReviews allowed except ``denied`` ("verb resource namespace");
    the Lease in FakeLeases."""

    leases: FakeLeases
    denied: set[str] = field(default_factory=set)
    reviews: list[Obj] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api":
            return httpx.Response(200, json={"versions": ["v1"]})
        if request.url.path == SSAR_PATH:
            attributes = json.loads(request.content)["spec"]["resourceAttributes"]
            self.reviews.append(attributes)
            key = f"{attributes['verb']} {attributes['resource']} {attributes.get('namespace', '')}".strip()
            return httpx.Response(201, json={"status": {"allowed": key not in self.denied}})
        return self.leases(request)


@dataclass
class StandbyStart:
    """A standby's preflight: the lease held by another replica that stops renewing it, and
    ``update leases`` refused at the first permission check, granted at the second."""

    fake: FakeLeases
    server: FakeApiServer
    elector: Elector
    refused: str | None


def _standby_start(
    observe: Callable[[], None],
    liveness: str | None = None,
    readiness: Readiness | None = None,
    fake: FakeLeases | None = None,
) -> StandbyStart:
    """Run the preflight, calling ``observe`` at each of its waits."""
    fake, clock = fake or FakeLeases(), Clock()
    fake.held_by(OTHER)
    server = FakeApiServer(fake, denied={f"update leases {NS}"})

    def each_sleep() -> None:
        observe()
        if len(clock.sleeps) == 1:
            server.denied.clear()  # the permission is granted after the first check

    clock.each_sleep = each_sleep
    elector = Elector(config())
    credentials = Credentials(server="https://k8s.test:6443", verify=False, token="t")
    refused = preflight(
        credentials,
        None,
        liveness,
        sleep=clock.sleep,
        transport=httpx.MockTransport(server),
        elector=elector,
        clock=clock,
        readiness=readiness,
    )
    return StandbyStart(fake, server, elector, refused)


def test_preflight_waits_for_the_lease_serving_liveness_as_a_standby() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    probes: list[tuple[int, str]] = []

    def probe() -> None:
        response = httpx.get(url, timeout=5)
        probes.append((response.status_code, response.text))

    start = _standby_start(probe, liveness=url)
    assert start.refused is None and start.elector.leading and start.fake.spec["holderIdentity"] == ME
    assert all(status == 200 for status, _ in probes)
    assert "waiting for permissions: update leases.coordination.k8s.io in namespace ops" in probes[0][1]
    assert probes[1][1] == f"starting: waiting for the leader lease {NS}/{NAME}, held by {OTHER}\n"
    # Unchanged for 15 s by the local clock, counted from the first look: then taken.
    assert probes[-1][1].endswith(f"held by {OTHER}\n")
    reviews = start.server.reviews
    lease_reviews = {(r["verb"], r.get("namespace")) for r in reviews if r["resource"] == "leases"}
    assert lease_reviews == {("get", NS), ("create", NS), ("update", NS)}


def test_a_standby_is_ready_once_its_permissions_are_granted_and_names_the_holder() -> None:
    readiness = Readiness(None, "the API server")
    answers: list[tuple[int, str]] = []
    start = _standby_start(lambda: answers.append(readiness.answer), readiness=readiness)
    assert start.refused is None and start.elector.leading
    # Without the permission it could not take over: not ready. With it, a standby: ready.
    assert answers[0] == (
        503,
        f"not ready: waiting for permissions: update leases.coordination.k8s.io in namespace {NS}",
    )
    assert set(answers[1:]) == {(200, f"ready: standby, the leader lease {NS}/{NAME} is held by {OTHER}")}
    assert readiness.answer == (200, "ready: starting kopf")  # it took the lease: kopf starts


def test_a_standby_that_cannot_read_the_lease_is_not_ready_until_it_reads_it_again() -> None:
    """A standby cut off from the API server could not take over either: a rollout must not count
    it as available and stop the working leader (before: it stayed ready, naming the holder it
    read last)."""
    readiness = Readiness(None, "the API server")
    fake = FakeLeases()
    answers: list[tuple[int, str]] = []

    def observe() -> None:
        answers.append(readiness.answer)
        if len(answers) == 3:
            fake.fail = 2  # the next two reads of the lease fail

    start = _standby_start(observe, readiness=readiness, fake=fake)
    assert start.refused is None and start.elector.leading
    standby = (200, f"ready: standby, the leader lease {NS}/{NAME} is held by {OTHER}")
    unreadable = (
        503,
        f"not ready: the leader lease {NS}/{NAME} cannot be read: get lease {NS}/{NAME}: HTTP 500 "
        "Internal Server Error etcdserver: request timed out",
    )
    assert answers[1:6] == [standby, standby, unreadable, unreadable, standby], answers


def test_the_lease_permissions_are_asked_for_only_with_leader_election() -> None:
    assert not [a for a in accesses(None) if a.rule.resource == "leases"]
    asked = [str(a) for a in accesses(["team-a"], lease_namespace="ops") if a.rule.resource == "leases"]
    assert asked == [
        f"{verb} leases.coordination.k8s.io in namespace ops" for verb in ("get", "create", "update")
    ]


def _problems(*argv: str, **env: str) -> list[str]:
    return config_problems(build_parser().parse_args(["operator", "run", *argv]), env)


def test_leader_election_flags_and_defaults() -> None:
    args = build_parser().parse_args(["operator", "run", "--leader-elect"])
    assert args.leader_election_id == "modelpool-operator" and args.leader_election_namespace is None
    assert (args.leader_election_lease_duration, args.leader_election_renew_deadline) == (15, 10.0)
    assert args.leader_election_retry_period == 2.0
    assert not build_parser().parse_args(["operator", "run"]).leader_elect


def test_the_lease_namespace_must_be_known(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(leader, "SA_NAMESPACE_FILE", tmp_path / "absent")
    (problem,) = _problems("--leader-elect")
    assert "--leader-election-namespace" in problem and "POD_NAMESPACE" in problem
    assert _problems("--leader-elect", POD_NAMESPACE="ops") == []
    assert _problems("--leader-elect", "--leader-election-namespace", "ops") == []
    assert _problems() == []  # without --leader-elect nothing is asked
    (bad,) = _problems("--leader-elect", "--leader-election-namespace", "Ops_1")
    assert bad.startswith("--leader-election-namespace='Ops_1'")
    (name,) = _problems("--leader-elect", "--leader-election-id", "Bad Name", POD_NAMESPACE="ops")
    assert name.startswith("--leader-election-id=")


def test_the_pods_namespace_comes_from_the_service_account_first(tmp_path: Path) -> None:
    mounted = tmp_path / "namespace"
    mounted.write_text("from-sa\n")
    assert leader.lease_namespace(None, {"POD_NAMESPACE": "from-env"}, mounted) == "from-sa"
    assert leader.lease_namespace(None, {"POD_NAMESPACE": "from-env"}, tmp_path / "no") == "from-env"
    assert leader.lease_namespace("flag", {"POD_NAMESPACE": "from-env"}, mounted) == "flag"
    assert leader.lease_namespace(None, {}, tmp_path / "no") is None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--leader-election-lease-duration", "10"], "--leader-election-lease-duration=10 is not longer"),
        (
            ["--leader-election-retry-period", "9"],
            "--leader-election-renew-deadline=10 is not longer than 1.2",
        ),
        # NaN compares false with everything: it passed every check, and a NaN renew deadline
        # never passes, so a leader that could not renew never stopped.
        (["--leader-election-renew-deadline", "nan"], "--leader-election-lease-duration, -renew-deadline"),
        (["--leader-election-retry-period", "inf"], "--leader-election-lease-duration, -renew-deadline"),
        (["--leader-election-retry-period", "0"], "--leader-election-lease-duration, -renew-deadline"),
    ],
)
def test_inconsistent_durations_are_named(argv: list[str], named: str) -> None:
    (problem,) = _problems("--leader-elect", *argv, POD_NAMESPACE="ops")
    assert problem.startswith(named), problem


def test_identity_is_the_host_name_and_a_random_suffix() -> None:
    first, second = leader.new_identity("pod-7"), leader.new_identity("pod-7")
    assert first.startswith("pod-7_") and second.startswith("pod-7_") and first != second


def test_lease_api_reports_refusals() -> None:
    refused = httpx.MockTransport(lambda r: httpx.Response(403, json={"message": "leases is forbidden"}))
    lease_api = LeaseApi(httpx.Client(base_url="https://k8s.test", transport=refused), config())
    with pytest.raises(Exception, match="HTTP 403 Forbidden leases is forbidden"):
        lease_api.get()


def test_threads_are_daemons_and_stop() -> None:
    fake = FakeLeases()
    cfg = config(timing=Timing(2, 0.6, 0.1))
    elector = Elector(cfg)
    wait_to_lead(api(fake, cfg), elector)
    leadership = Leadership(api(fake, cfg), elector, on_lost=lambda _: None).start()
    names = {t.name for t in threading.enumerate()}
    assert {"leader-renew", "leader-watchdog"} <= names
    leadership.stop()
    assert not {"leader-renew", "leader-watchdog"} & {t.name for t in threading.enumerate()}


class SlowLeases(FakeLeases):
    """The Lease store behind an API server that takes ``latency`` seconds of ``clock`` to answer
    (the clock moves on by that much while the request is out); ``hang`` makes the next PUT of the
    renew thread wait until it is set (``hanging`` is set while it waits)."""

    def __init__(self, latency: float = 0.0, clock: Clock | None = None) -> None:
        super().__init__()
        self.latency = latency
        self.clock = clock
        self.hang: threading.Event | None = None
        self.hanging = threading.Event()
        self.writers: list[tuple[str, str]] = []
        self.sent: list[tuple[str, float]] = []
        self.on_answer: Callable[[], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        hang = self.hang
        if hang is not None and request.method == "PUT" and threading.current_thread().name == "leader-renew":
            self.hang = None
            self.hanging.set()
            hang.wait(5)
        if self.clock is not None:
            self.sent.append((request.method, self.clock.now))
            self.clock.now += self.latency
        if self.on_answer is not None:
            self.on_answer()
        response = super().__call__(request)
        if request.method in ("POST", "PUT") and response.status_code < 300:
            holder = self.spec["holderIdentity"] or "<released>"
            self.writers.append((threading.current_thread().name, holder))
        return response


def _renewing(fake: FakeLeases, timing: Timing) -> tuple[Leadership, list[str]]:
    """This replica takes the lease from ``fake`` and renews it in the background; the reasons it
    would have exited for are collected instead."""
    cfg = config(timing=timing)
    elector = Elector(cfg)
    wait_to_lead(api(fake, cfg), elector)
    lost: list[str] = []
    return Leadership(api(fake, cfg), elector, on_lost=lost.append).start(), lost


class _SteppedWaits(threading.Event):
    """A Leadership's ``_stop`` for its renew loop run in the test's thread: each wait moves the
    fake clock on by its timeout and returns at once; the loop stops after ``rounds`` waits."""

    def __init__(self, clock: Clock, rounds: int) -> None:
        super().__init__()
        self.clock = clock
        self.rounds = rounds

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None and timeout >= 0
        self.clock.now += timeout
        self.rounds -= 1
        if self.rounds < 0:
            self.set()
        return self.is_set()


def test_a_steady_slow_api_server_keeps_the_leader_when_every_renewal_succeeds() -> None:
    # 0.7 s per request, renewals every 0.8 s, deadline 2 s. Paced from when the previous renewal
    # came back (0.7 + 0.8 s between sends), the deadline passed between two successful renewals
    # (2 x 0.7 + 0.8 = 2.2 s); paced from when it was sent, there are 1.5 s at most.
    # The renew loop runs on the fake clock: the API server's latency and the loop's waits move it.
    clock = Clock()
    fake = SlowLeases(clock=clock)
    leadership, lost = _leading(fake, clock, Timing(6, 2.0, 0.8))
    fake.latency = 0.7
    fake.sent.clear()  # the taking's requests
    looks: list[bool] = []
    fake.on_answer = lambda: looks.append(leadership.check())  # the watchdog at the worst moment
    leadership._stop = _SteppedWaits(clock, rounds=8)
    leadership._renew_loop()
    assert lost == []
    assert looks == [True] * len(fake.sent)  # the deadline never passed before an answer came
    sends = [t for method, t in fake.sent if method == "PUT"]
    assert len(sends) >= 6, fake.sent
    assert [b - a for a, b in itertools.pairwise(sends)] == [pytest.approx(0.8)] * (len(sends) - 1)


class _WatchedLock:
    """A Leadership's ``_write_lock`` that tells when a thread has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited = threading.Event()

    def __enter__(self) -> _WatchedLock:
        if not self._lock.acquire(blocking=False):
            self.waited.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_renewal_in_flight_when_the_leader_stops_never_takes_the_released_lease_back() -> None:
    fake = SlowLeases()
    leadership, lost = _renewing(fake, Timing(6, 2.0, 0.2))
    lock = leadership._write_lock = _WatchedLock()  # type: ignore[assignment]
    threads = list(leadership._threads)
    _until(lambda: any(w[0] == "leader-renew" for w in fake.writers), "a renewal")
    hang = threading.Event()
    fake.hang = hang  # the next renewal's PUT hangs, as on a dead connection
    assert fake.hanging.wait(10), "no renewal was sent"
    stopper = threading.Thread(target=leadership.stop)
    stopper.start()
    released: list[bool] = []
    releaser = threading.Thread(target=lambda: released.append(leadership.release()))
    releaser.start()
    assert lock.waited.wait(10), "the release did not wait for the renewal in flight"
    assert fake.spec["holderIdentity"] == ME and released == []
    hang.set()
    stopper.join(10)
    releaser.join(10)
    for thread in threads:  # the renew and watchdog threads have ended: nothing writes after this
        thread.join(10)
        assert not thread.is_alive(), thread.name
    assert released == [True]
    assert fake.spec["holderIdentity"] == "", fake.writers
    assert fake.writers[-1][1] == "<released>", fake.writers  # no write after the release
    assert lost == []


# --- stopping: the release, also right after the taking (cli) -----------------------------------


def test_a_standby_that_stops_releases_nothing_and_asks_nothing() -> None:
    fake = FakeLeases()
    fake.held_by(OTHER)
    elector = Elector(config())
    elector.observe(fake.lease, 1000.0)  # it waited as a standby, then got SIGTERM
    requests = fake.requests
    assert not Leadership(api(fake), elector, on_lost=lambda _: None).release()
    assert fake.requests == requests and fake.spec["holderIdentity"] == OTHER


@pytest.fixture
def _sigterm_handler_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class _SigtermWhenLeading(logging.Handler):
    """Sends this process SIGTERM as the operator logs that it leads: within the moment between the
    taking of the lease and the start of the renew thread and kopf."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("leading: "):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("when", ["answer-on-its-way", "lease-taken"])
@pytest.mark.usefixtures("_sigterm_handler_restored")
def test_a_sigterm_right_after_the_lease_is_taken_releases_it(
    when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollout's SIGTERM in the fraction of a second after this replica took the lease, before the
    renew thread and kopf started (or while the answer to the taking was still on its way): the
    lease is released all the same, so the standby takes over at its next look, not after the lease
    duration."""
    from modelpool import cli, kubelogin, startup

    fake = FakeLeases()
    server = FakeApiServer(fake)

    def api_server(request: httpx.Request) -> httpx.Response:
        response = server(request)
        if when == "answer-on-its-way" and request.url.path == LEASES and response.status_code == 201:
            os.kill(os.getpid(), signal.SIGTERM)  # the API server has stored it; the answer is lost
        return response

    real_client = startup.api_client
    monkeypatch.setattr(
        startup,
        "api_client",
        lambda credentials, transport=None: real_client(
            credentials, transport=httpx.MockTransport(api_server)
        ),
    )
    monkeypatch.setattr(
        kubelogin,
        "load_credentials",
        lambda: Credentials(server="https://k8s.test:6443", verify=False, token="t"),
    )
    monkeypatch.setattr(cli, "_run_kopf", lambda *_: pytest.fail("kopf started after the SIGTERM"))
    monkeypatch.delenv("MODELPOOL_METRICS_PORT", raising=False)
    handler = _SigtermWhenLeading()
    logging.getLogger("modelpool.operator").addHandler(handler)
    try:
        args = build_parser().parse_args(
            ["operator", "run", "--leader-elect", "--leader-election-namespace", NS]
        )
        with pytest.raises(SystemExit) as stopped:
            cli._operator(args)
    finally:
        logging.getLogger("modelpool.operator").removeHandler(handler)
    assert stopped.value.code == 0
    assert [method for method, _ in fake.writes] == ["POST", "PUT"], fake.writes  # taken, released
    assert fake.spec["holderIdentity"] == "" and fake.spec["leaseDurationSeconds"] == 1
