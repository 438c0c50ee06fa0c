"""Pure helpers for Kubernetes-style conditions (set, find, compare)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from modelpool.api.base import Condition, ConditionStatus

# Condition types. Every kind carries Ready; the others say why it is or is not.
ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
GPU_BUDGET_FITS = "GPUBudgetFits"
METRICS_AVAILABLE = "MetricsAvailable"
PROFILES_CURRENT = "ProfilesCurrent"
PROGRAMMED = "Programmed"
DISRUPTION_BUDGET_APPLIED = "DisruptionBudgetApplied"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; lastTransitionTime moves only when status changes."""
    old = find(conditions, type_)
    transition = old.last_transition_time if old is not None and old.status == status else None
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition or now or now_rfc3339(),
        observed_generation=generation,
    )
    out = [c for c in conditions if c.type != type_]
    out.append(new)
    return sorted(out, key=lambda c: c.type)


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    """Return ``conditions`` without ``type_`` (for a condition about something no longer there)."""
    return [c for c in conditions if c.type != type_]


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    cond = find(conditions, type_)
    return cond is not None and cond.status == "True"
