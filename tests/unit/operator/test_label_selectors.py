"""Label selectors matched as the API server matches them."""

from __future__ import annotations

from typing import Any

import pytest

from modelpool.controllers.label_selectors import selector_matches

POD = {"app": "triton", "modelpool.dev/pool": "bank", "tier": "small"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, False),  # policy/v1: a null selector selects no pod
        ({}, True),  # an empty one selects every pod of the namespace
        ({"matchLabels": {}}, True),
        ({"matchLabels": {"app": "triton"}}, True),
        ({"matchLabels": {"app": "triton", "tier": "large"}}, False),
        ({"matchLabels": {"other": "x"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["small", "large"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["large"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["large"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["small"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"app": "triton"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["large"]}],
            },
            False,
        ),
        ({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}, False),
    ],
)
def test_selector_matches(selector: dict[str, Any] | None, expected: bool) -> None:
    assert selector_matches(selector, POD) is expected
