"""Kubernetes label selectors (``matchLabels`` and ``matchExpressions``) matched in Python, as the
API server matches them (k8s.io/apimachinery ``LabelSelectorAsSelector``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match ``selector``. A missing (null) selector matches nothing and an empty
    one everything, as for a PodDisruptionBudget in policy/v1. An operator this does not know
    matches nothing (the API server refuses such a selector anyway)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator")
        values = set(expression.get("values") or [])
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            return False
        if not ok:
            return False
    return True
