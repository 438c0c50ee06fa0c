"""A reconcile loop while the API server is away: bounded retries, one log line, no Event flood."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import kopf
import pytest

from modelpool.api import conditions as c
from modelpool.api.base import Condition
from modelpool.api.modelpool import ModelPoolSpec
from modelpool.controllers import handlers
from modelpool.controllers.backoff import FailureStreak, api_unavailable
from modelpool.controllers.pool_reconciler import (
    DEPLOYMENT,
    SERVICE,
    CachedChildReader,
    RefreshingChildReader,
    _converge_variant,
)
from modelpool.controllers.pool_status import ChildIssues
from modelpool.controllers.scaling_planner import ScalingPlanner
from modelpool.controllers.triggers import StopFlag, Triggers
from modelpool.kube import KubeClient, KubeError, Obj
from modelpool.kubelogin import Credentials

REFUSED = httpx.ConnectError("All connection attempts failed")


class RecordedWaits(Triggers):
    """Triggers whose waits return at once and are recorded (seconds asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def wait(self, event: Any, *, stopped_flag: StopFlag, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


class StoppedOnceDone:
    """kopf's stop flag for a loop whose object is gone after its last pass: set once every pass of
    ``outcomes`` has run (a pass that finds the object absent does not end the loop by itself)."""

    def __init__(self, outcomes: list[BaseException | float | None]) -> None:
        self.left = len(outcomes)

    def __bool__(self) -> bool:
        return self.left == 0


async def _run_loop(
    monkeypatch: pytest.MonkeyPatch, outcomes: list[BaseException | float | None]
) -> tuple[RecordedWaits, list[tuple[str, str]]]:
    """Run ``_reconcile_loop`` over passes that raise or return ``outcomes`` in turn (the last one
    None: the object is gone); the waits asked for and the Events posted."""
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: events.append((type, reason)))
    monkeypatch.setattr(handlers, "RESYNC_SECONDS", 30.0)
    monkeypatch.setattr(handlers, "ERROR_BACKOFF_SECONDS", 5.0)
    passes = iter(outcomes)
    stopped = StoppedOnceDone(outcomes)

    async def reconcile(emit: handlers.EventSink) -> float | None:
        outcome = next(passes)
        stopped.left -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    triggers = RecordedWaits()
    await handlers._reconcile_loop(
        triggers,
        "ns",
        "bank",
        kopf.Body({}),
        logging.getLogger("test.loop"),
        stopped,  # type: ignore[arg-type]
        reconcile,
    )
    return triggers, events


async def test_an_api_server_outage_backs_off_to_one_resync_period_without_events(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve refused passes (a minute and more of outage): the retries double from 5 s up to the
    resync period, no ReconcileError Event piles up in kopf's queue for the API server to receive
    in a burst when it is back, and the log holds a few lines, none with a traceback."""
    caplog.set_level(logging.INFO, logger="test.loop")
    triggers, events = await _run_loop(monkeypatch, [*[REFUSED] * 12, 30.0, None])

    assert triggers.waits == [5.0, 10.0, 20.0, *[30.0] * 9, 30.0]
    assert events == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.exc_info for r in warnings] == [None] * len(warnings)
    assert len(warnings) == 4  # at the 1st, 2nd, 4th and 8th failure
    assert "API server unavailable for ns/bank" in warnings[0].getMessage()
    assert "succeeded again after 12 failed passes" in caplog.records[-1].getMessage()


async def test_the_backoff_starts_over_after_a_good_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    triggers, _ = await _run_loop(monkeypatch, [REFUSED, REFUSED, 30.0, REFUSED, None])
    assert triggers.waits == [5.0, 10.0, 30.0, 5.0]


async def test_other_failures_are_still_reported_with_their_traceback_and_an_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    triggers, events = await _run_loop(
        monkeypatch, [ValueError("bug"), KubeError(422, "Invalid", "no"), None]
    )
    assert events == [("Warning", "ReconcileError"), ("Warning", "ReconcileError")]
    assert triggers.waits == [5.0, 10.0]
    assert all(r.exc_info for r in caplog.records if r.getMessage().startswith("reconcile of"))


@pytest.mark.parametrize(
    ("err", "unavailable"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("closed"), True),
        (KubeError(429, "TooManyRequests", "storage is (re)initializing"), True),
        (KubeError(500, "InternalError", "etcdserver: request timed out"), True),
        (KubeError(503, "ServiceUnavailable", "unavailable"), True),
        (KubeError(504, "Timeout", "request did not complete"), True),
        (KubeError(403, "Forbidden", "rbac"), False),
        (KubeError(422, "Invalid", "bad"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_counts_as_the_api_server_being_away(err: BaseException, unavailable: bool) -> None:
    assert api_unavailable(err) is unavailable


def test_failure_streak_reports_how_long_it_lasted() -> None:
    now = [10.0]
    streak = FailureStreak(5.0, 30.0, clock=lambda: now[0])
    assert streak.succeeded() is None
    assert [streak.failed() for _ in range(5)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    now[0] = 75.0
    assert streak.succeeded() == (5, 65.0)
    assert streak.failed() == 5.0


def test_a_failed_pass_makes_the_next_one_list_from_the_api_server() -> None:
    """The watches broke with the API server: the first pass after it is back must not trust a
    cache that may still hold a child deleted meanwhile."""
    now = [100.0]
    api = CachedChildReader(lambda: (), lambda: (), lambda: ())
    cache = CachedChildReader(lambda: (), lambda: (), lambda: ())
    readers = RefreshingChildReader(api, cache, every_s=30.0, clock=lambda: now[0])
    assert readers.for_pass() is api
    now[0] = 101.0
    assert readers.for_pass() is cache
    readers.relist()  # that pass failed
    now[0] = 106.0
    assert readers.for_pass() is api
    now[0] = 107.0
    assert readers.for_pass() is cache


class BusyKube:
    """An API server that answers every child write with ``status``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.error = KubeError(status, reason, message)

    async def get(self, path: str) -> Obj | None:
        return None

    async def apply(self, path: str, body: Obj, *, force: bool = True) -> Obj:
        raise self.error


SPEC = ModelPoolSpec.model_validate(
    {
        "gpuPool": {"gpuBudget": 4},
        "variants": [{"name": "small", "tier": "small", "model": {"name": "m", "repository": "/models"}}],
    }
)


async def _converge(kube: BusyKube) -> tuple[ChildIssues, list[tuple[str, str, str]]]:
    issues = ChildIssues()
    events: list[tuple[str, str, str]] = []
    await _converge_variant(
        kube,  # type: ignore[arg-type]
        "ns",
        "bank",
        "uid-1",
        SPEC,
        SPEC.variants[0],
        1,
        lambda *event: events.append(event),
        issues,
        {DEPLOYMENT.kind: {}, SERVICE.kind: {}},
    )
    return issues, events


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (
            503,
            "ServiceUnavailable",
            "the request has been made before all known HTTP paths have been installed",
        ),
        (429, "TooManyRequests", "storage is (re)initializing"),
        (504, "Timeout", "request did not complete within the allotted timeout"),
    ],
)
async def test_a_busy_api_server_is_no_refused_child(status: int, reason: str, message: str) -> None:
    """Right after the API server starts it answers 503 (seen on the real one) or 429: that
    fails the pass, to be retried, instead of a ChildRejected Warning and Degraded=ChildRejected."""
    with pytest.raises(KubeError):
        await _converge(BusyKube(status, reason, message))


async def test_a_refused_child_is_still_reported_once_while_the_refusal_lasts() -> None:
    """A refusal is ChildRejected in Degraded and one ChildRejected Event; the passes after it, while
    Degraded already says so, post none (before: an Event and a log line every pass, one a second
    at ``intervalSeconds: 1``). A new refusal is reported again."""
    from modelpool.controllers.pool_reconciler import _report_rejections

    issues, events = await _converge(BusyKube(500, "InternalError", 'failed calling webhook "x"'))
    assert issues.rejected and not issues.conflicts and events == []
    posted: list[tuple[str, ...]] = []
    _report_rejections(issues, [], lambda *event: posted.append(event))
    # the Service and the Deployment, each refused (a refused Service does not skip the Deployment)
    assert [e[1] for e in posted] == ["ChildRejected"] * 2 and all('webhook "x"' in e[2] for e in posted)

    def degraded(message: str) -> list[Any]:
        return c.set_condition([], c.DEGRADED, "True", "ChildRejected", message, 1, "2026-11-24T00:00:00Z")

    posted.clear()
    _report_rejections(issues, degraded("; ".join(issues.rejected)), lambda *event: posted.append(event))
    assert posted == []  # already reported
    _report_rejections(issues, degraded(issues.rejected[0]), lambda *e: posted.append(e))
    assert len(posted) == 1 and "Deployment" in posted[0][2]  # the one not reported yet


def test_a_lasting_failure_is_reported_at_each_doubling() -> None:
    from modelpool.controllers.backoff import report_due

    assert [n for n in range(0, 40) if report_due(n)] == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (ValueError("bug"), "ReconcileError"),
        (KubeError(403, "Forbidden", 'cannot list resource "pods"'), "Forbidden"),
    ],
)
async def test_a_failure_that_lasts_is_posted_at_each_doubling_not_at_each_pass(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, err: Exception, reason: str
) -> None:
    """Nine failed passes post the Event at the 1st, 2nd, 4th and 8th (before: a ReconcileError at
    every pass, one every 30 s for as long as it lasted); a success ends the streak, so the next
    failure is posted at once. An unexpected failure's traceback is still logged at every pass."""
    caplog.set_level(logging.INFO, logger="test.loop")
    _, events = await _run_loop(monkeypatch, [*[err] * 9, 30.0, err, None])
    assert events == [("Warning", reason)] * 5
    said = [m for r in caplog.records for m in re.findall(r"failed passes (\d+), next in", r.getMessage())]
    assert said == ["1", "2", "4", "8", "1"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == (10 if reason == "ReconcileError" else 0)


class Stop:
    """A daemon's stop flag, set by the test (as kopf sets it when the object is deleted)."""

    def __init__(self) -> None:
        self.reason: kopf.DaemonStoppingReason | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self) -> None:
        self.reason = kopf.DaemonStoppingReason.RESOURCE_DELETED


POOL_PATH = "/apis/modelpool.dev/v1alpha1/namespaces/ns/modelpools/bank"
LISTED = frozenset({"deployments", "services", "pods", "poddisruptionbudgets"})


class FakeApi:
    """An API server behind httpx.MockTransport: the pool's GET answers 404 ``missing`` times (as
    it does while a CRD update serves the pool's version no more), then the pool; lists, applies
    and status patches as the real one does them, for one pool."""

    def __init__(self, missing: int) -> None:
        self.missing = missing
        self.objects: dict[str, Obj] = {
            POOL_PATH: {
                "apiVersion": "modelpool.dev/v1alpha1",
                "kind": "ModelPool",
                "metadata": {"name": "bank", "namespace": "ns", "uid": "uid-1", "generation": 1},
                "spec": {**SPEC.to_wire(), "scaling": {"enabled": False}},
            }
        }
        self.answers: list[tuple[str, str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self._answer(request.method, request.url.path, request.content)
        self.answers.append((request.method, request.url.path, response.status_code))
        return response

    def _answer(self, method: str, path: str, content: bytes) -> httpx.Response:
        if method == "GET" and path == POOL_PATH and self.missing > 0:
            self.missing -= 1
            return _not_found("the server could not find the requested resource")
        if method == "GET" and path in self.objects:
            return httpx.Response(200, json=self.objects[path])
        if method == "GET" and path.rsplit("/", 1)[1] in LISTED:
            items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
            return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": "1"}})
        if method == "PATCH" and path.endswith("/status") and path.removesuffix("/status") in self.objects:
            target = self.objects[path.removesuffix("/status")]
            target["status"] = json.loads(content)["status"]
            return httpx.Response(200, json=target)
        if method == "PATCH":
            stored = json.loads(content)
            stored["metadata"]["uid"] = f"uid-of-{path}"
            self.objects[path] = stored
            return httpx.Response(200, json=stored)
        return _not_found(f"{path} not found")

    def pool_gets(self) -> list[int]:
        return [status for method, path, status in self.answers if (method, path) == ("GET", POOL_PATH)]


def _not_found(message: str) -> httpx.Response:
    return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "message": message, "code": 404})


async def _start_pool_daemon(
    monkeypatch: pytest.MonkeyPatch, api: FakeApi, stop: Stop
) -> tuple[asyncio.Task[None], ScalingPlanner]:
    """The pool's daemon as kopf runs it (kwargs only), over ``api``; a resync period of 30 s and
    retries after 10 ms, doubling."""
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: None)
    monkeypatch.setattr(handlers, "RESYNC_SECONDS", 30.0)
    monkeypatch.setattr(handlers, "ERROR_BACKOFF_SECONDS", 0.01)
    kube = KubeClient(
        Credentials(server="http://127.0.0.1:9", verify=False), transport=httpx.MockTransport(api)
    )
    planner = ScalingPlanner(default_prometheus_url=None)
    indexes: dict[str, dict[Any, Any]] = {
        name: {}
        for name in (
            "gpu_pool_members",
            "routed_latency_slos",
            "pool_deployments",
            "pool_services",
            "pool_pods",
        )
    }
    run_pool: Any = handlers.run_pool
    daemon = run_pool(
        namespace="ns",
        name="bank",
        body=kopf.Body({"metadata": {"namespace": "ns", "name": "bank"}}),
        memo={"kube": kube, "planner": planner},
        logger=logging.getLogger("test.daemon"),
        stopped=stop,
        **indexes,
    )
    return asyncio.create_task(daemon), planner


async def _until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_pool_daemon_goes_on_after_a_404_and_reconciles_once_the_pool_is_served_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool's GET answered 404 (a CRD update not serving its version for a moment): the daemon
    ended, and the pool was reconciled no more until the operator restarted. It looks again,
    backing off, logs it at the 1st, 2nd, 4th... such pass, and reconciles once the GET answers;
    kopf's stop flag still ends it at once."""
    caplog.set_level(logging.INFO, logger="test.daemon")
    api, stop = FakeApi(missing=3), Stop()
    daemon, planner = await _start_pool_daemon(monkeypatch, api, stop)
    try:
        await _until(lambda: "status" in api.objects[POOL_PATH] or daemon.done(), 5.0)
        assert not daemon.done()
        assert api.pool_gets() == [404, 404, 404, 200]
        assert any(p.endswith("/deployments/bank-small") for p in api.objects)  # its children applied
        assert c.is_true(
            [Condition.model_validate(x) for x in api.objects[POOL_PATH]["status"]["conditions"]], c.ACCEPTED
        )
        said = [r.getMessage() for r in caplog.records if "not found" in r.getMessage()]
        assert len(said) == 2 and all(
            m.startswith("ns/bank not found (the API server answered 404)") for m in said
        )
        assert any("found again after 3 passes" in r.getMessage() for r in caplog.records)
        stop.set()  # the loop now waits a resync period (30 s): the stop ends it within a second
        await asyncio.wait_for(daemon, 2.0)
    finally:
        daemon.cancel()
        await planner.close()


async def test_a_pool_daemon_waiting_for_its_pool_still_ends_when_kopf_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool that is gone for good: the daemon keeps looking (at most once a resync period) until
    kopf, which stops the daemon of a deleted object, sets its stop flag; then it ends promptly
    and keeps no wake-up flag for it."""
    api, stop = FakeApi(missing=10**6), Stop()
    daemon, planner = await _start_pool_daemon(monkeypatch, api, stop)
    try:
        await _until(lambda: len(api.pool_gets()) >= 3 or daemon.done(), 5.0)
        assert not daemon.done()
        stop.set()
        await asyncio.wait_for(daemon, 2.0)
        assert set(api.pool_gets()) == {404}
        assert ("ns", "bank") not in handlers.TRIGGERS._events
    finally:
        daemon.cancel()
        await planner.close()
