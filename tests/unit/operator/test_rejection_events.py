"""Refused child writes and deletes are reported by one Event each, not one per pass, also when
the Degraded message that reports them was cut at the condition's maximum length."""

from __future__ import annotations

from modelpool.api.base import MESSAGE_MAX_LENGTH, Condition, shorten
from modelpool.controllers.pool_reconciler import _report_rejections
from modelpool.controllers.pool_status import ChildIssues, degraded_message

Event = tuple[str, str, str]


def _degraded(message: str) -> list[Condition]:
    return [
        Condition(
            type="Degraded",
            status="True",
            reason="ChildRejected",
            message=shorten(message, MESSAGE_MAX_LENGTH),
            last_transition_time="2026-11-24T00:00:00Z",
            observed_generation=1,
        )
    ]


def _refusals(count: int) -> list[str]:
    """Refusals long enough that together they pass the condition message's maximum length."""
    return [f"Deployment bank-v{i} refused: {'x' * 2000}" for i in range(count)]


def _events(issues: ChildIssues, previous: list[Condition]) -> list[Event]:
    events: list[Event] = []
    _report_rejections(issues, previous, lambda *e: events.append(e))  # type: ignore[arg-type]
    return events


def test_a_refusal_already_reported_is_not_posted_again() -> None:
    refused = _refusals(2)
    previous = _degraded(degraded_message([("ChildRejected", m) for m in refused]))
    assert _events(ChildIssues(rejected=refused), previous) == []


def test_a_new_refusal_is_posted_once() -> None:
    refused = _refusals(2)
    previous = _degraded(degraded_message([("ChildRejected", refused[0])]))
    assert _events(ChildIssues(rejected=refused), previous) == [("Warning", "ChildRejected", refused[1])]


def test_refusals_cut_from_a_long_degraded_message_are_not_posted_at_every_pass() -> None:
    """The Degraded message is cut at 32768 characters; the refusals past the cut are not in it,
    and were posted again at every pass (one Event each per pass, for as long as they last)."""
    refused = _refusals(20)  # about 40,000 characters
    previous = _degraded(degraded_message([("ChildRejected", m) for m in refused]))
    assert len(previous[0].message) <= MESSAGE_MAX_LENGTH and refused[-1] not in previous[0].message
    assert _events(ChildIssues(rejected=refused), previous) == []
