"""A reconcile loop while the API server is away: bounded retries, one log line, no Event flood."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import kopf
import pytest

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
from modelpool.controllers.triggers import StopFlag, Triggers
from modelpool.kube import KubeError, Obj

REFUSED = httpx.ConnectError("All connection attempts failed")


class RecordedWaits(Triggers):
    """Triggers whose waits return at once and are recorded (seconds asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def wait(self, event: Any, *, stopped_flag: StopFlag, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


class Never:
    def __bool__(self) -> bool:
        return False


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

    async def reconcile(emit: handlers.EventSink) -> float | None:
        outcome = next(passes)
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
        Never(),  # type: ignore[arg-type]
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
    fails the pass, to be retried, instead of a ChildRejected Warning and Degraded=ChildConflict."""
    with pytest.raises(KubeError):
        await _converge(BusyKube(status, reason, message))


async def test_a_refused_child_is_still_reported_once_while_the_refusal_lasts() -> None:
    """A refusal is a conflict in Degraded and one ChildRejected Event; the passes after it, while
    Degraded already says so, post none (before: an Event and a log line every pass, one a second
    at ``intervalSeconds: 1``). A new refusal is reported again."""
    from modelpool.api import conditions as c
    from modelpool.controllers.pool_reconciler import _report_rejections

    issues, events = await _converge(BusyKube(500, "InternalError", 'failed calling webhook "x"'))
    assert issues.conflicts and issues.rejected and events == []
    posted: list[tuple[str, ...]] = []
    _report_rejections(issues, [], lambda *event: posted.append(event))
    assert [e[1] for e in posted] == ["ChildRejected"] and 'webhook "x"' in posted[0][2]

    def degraded(message: str) -> list[Any]:
        return c.set_condition([], c.DEGRADED, "True", "ChildConflict", message, 1, "2026-11-24T00:00:00Z")

    posted.clear()
    _report_rejections(issues, degraded("; ".join(issues.conflicts)), lambda *event: posted.append(event))
    assert posted == []  # already reported
    _report_rejections(issues, degraded("variant small: another refusal"), lambda *e: posted.append(e))
    assert len(posted) == 1


def test_a_lasting_failure_is_reported_at_each_doubling() -> None:
    from modelpool.controllers.backoff import report_due

    assert [n for n in range(0, 40) if report_due(n)] == [1, 2, 4, 8, 16, 32]
