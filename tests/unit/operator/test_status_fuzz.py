"""A ModelPool status written by another operator version or edited by hand.

The status carries the scaler's memory (stabilisation windows, burst reserve) across operator
restarts. A part the model refuses must cost only that part, never the rest of the memory (without
it the first decision scales down at once), and never a failed pass.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpool.api.modelpool import ModelPoolStatus
from modelpool.controllers.pool_reconciler import hold_or_minimum, parse_status
from modelpool.controllers.scaling_planner import ScalingOutcome, expected_overflow, gpu_pool_member
from unit.operator.test_scaling_planner import FakeReader, _metrics, _planner, _spec

NOW = 1_700_000_000.0

LARGE = {
    "name": "large",
    "tier": "large",
    "desiredReplicas": 3,
    "scaler": {"decidedAt": NOW - 5, "recommendations": [{"t": NOW - 5, "replicas": 3}]},
}
SMALL = {
    "name": "small",
    "tier": "small",
    "desiredReplicas": 1,
    "capacityShortfallRps": 0,
    "scaler": {
        "decidedAt": NOW - 5,
        "lastDemandRps": 1.0,
        "recommendations": [{"t": NOW - 5, "replicas": 1}],
        "burstsUpdatedAt": NOW - 5,
        "burstRequests": 10.0,
        "burstLate": [{"extraReplicas": 1, "requests": 2.0}],
    },
}
STATUS: dict[str, Any] = {"observedGeneration": 1, "variants": [LARGE, SMALL]}
"""The large variant's 300 s window still holds its 3 replicas at 1 req/s (2 would do)."""


def plan(raw: Any, rate: float = 1.0) -> ScalingOutcome:
    """One decision on a restarted operator (nothing in memory) from the stored status ``raw``."""
    spec = _spec()
    previous = parse_status(raw)
    planner = _planner(FakeReader({"m-small": _metrics(rate, NOW), "m-large": _metrics(rate, NOW)}))
    current = {"small": 1, "large": 3}
    outcome: ScalingOutcome = asyncio.run(
        planner.plan("ns", "p", spec, previous, current, hold_or_minimum(spec, previous), now=NOW)
    )
    return outcome


def test_the_stored_window_keeps_the_large_variant() -> None:
    assert plan(STATUS).plans["large"].replicas == 3
    assert plan(None).plans["large"].replicas == 2  # without the memory it scales down


def test_one_bad_entry_costs_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    """A negative burstLate entry of the small variant made the whole status unreadable: the large
    variant forgot its window and scaled down 3 -> 2, and nothing said why."""
    raw = copy.deepcopy(STATUS)
    raw["variants"][1]["scaler"]["burstLate"][0]["requests"] = -1
    with caplog.at_level(logging.WARNING):
        outcome = plan(raw)
    assert outcome.plans["large"].replicas == 3
    previous = parse_status(raw)
    assert previous is not None
    assert previous.variants[1].scaler is not None
    assert previous.variants[1].scaler.burst_late == []
    assert previous.variants[1].scaler.burst_requests == 10.0
    assert "variants.1.scaler.burstLate.0.requests: Input should be greater than or equal to 0" in caplog.text


def test_a_negative_shortfall_moves_no_load_away() -> None:
    """capacityShortfallRps -1000 on the small tier took 1000 req/s off the large one: 3 -> 1."""
    raw = copy.deepcopy(STATUS)
    raw["variants"][1]["capacityShortfallRps"] = -1000
    raw["variants"][0].pop("scaler")
    previous = parse_status(raw)
    assert expected_overflow(_spec(), previous) == {"small": 0.0, "large": 0.0}
    assert (
        plan(raw, rate=20.0).plans["large"].replicas
        == plan({"variants": [LARGE]}, 20.0).plans["large"].replicas
    )


def test_a_negative_desired_count_holds_no_negative_gpus() -> None:
    """desiredReplicas -100 counted -100 GPUs held: other pools on the GPU pool saw 100 more free."""
    spec = {"gpuPool": {"name": "g", "gpuBudget": 8}, "variants": [{"name": "small", "minReplicas": 1}]}
    for bad in (-100, True, 1.5, "3", None):
        member = gpu_pool_member("ns", "p", spec, {"variants": [{"name": "small", "desiredReplicas": bad}]})
        assert member is not None
        assert member["g"].held_gpus == 1  # the variant's floor


def test_a_recommendation_from_the_future_does_not_pin_replicas(caplog: pytest.LogCaptureFixture) -> None:
    """A recommendation dated 30 years ahead stayed in every scale-down window: 3 replicas for ever."""
    raw = copy.deepcopy(STATUS)
    raw["variants"][0]["scaler"]["recommendations"] = [{"t": NOW + 1e9, "replicas": 3}]
    with caplog.at_level(logging.WARNING):
        outcome = plan(raw)
    assert outcome.plans["large"].replicas == 2
    assert "ignored 1 stored recommendation(s) dated more than 60s after now" in caplog.text
    memory = outcome.plans["large"].memory
    assert memory is not None and all(r.t <= NOW for r in memory.recommendations)


def test_a_huge_list_of_bad_entries_is_dropped_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 000 refused entries are dropped together, round by round, in as many validations as one
    refused entry takes: not one validation (or one round) per entry."""
    validate = ModelPoolStatus.model_validate
    validations: list[object] = []

    def counted(data: Any, *args: Any, **kwargs: Any) -> ModelPoolStatus:
        validations.append(data)
        return validate(data, *args, **kwargs)

    monkeypatch.setattr(ModelPoolStatus, "model_validate", counted)

    def with_bad_entries(n: int) -> dict[str, Any]:
        raw = copy.deepcopy(STATUS)
        raw["variants"][1]["scaler"]["burstLate"] = [{"extraReplicas": i, "requests": -1} for i in range(n)]
        return raw

    assert parse_status(with_bad_entries(1)) is not None
    one = len(validations)
    validations.clear()
    raw = with_bad_entries(20_000)
    previous = parse_status(raw)
    assert len(validations) == one, f"{len(validations)} validations for 20 000 entries, {one} for one"
    assert previous is not None
    assert previous.variants[1].scaler is not None and previous.variants[1].scaler.burst_late == []
    assert previous.variants[0] == parse_status(STATUS).variants[0]  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [[1], "x", 5])
def test_a_status_that_is_no_object_is_rebuilt(raw: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_status(raw) is None
    assert "the whole status: Input should be a valid dictionary" in caplog.text


def test_a_status_whose_fields_are_no_lists_keeps_the_defaults(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_status({"variants": 7, "conditions": "x"}) == ModelPoolStatus()
    assert "variants: Input should be a valid list; conditions: Input should be a valid list" in caplog.text


SMALL_PATHS: list[tuple[str | int, ...]] = [
    ("desiredReplicas",),
    ("readyReplicas",),
    ("gpus",),
    ("capacityShortfallRps",),
    ("reason",),
    ("tier",),
    ("name",),
    ("scaler",),
    ("scaler", "decidedAt"),
    ("scaler", "lastDemandRps"),
    ("scaler", "recommendations"),
    ("scaler", "recommendations", 0),
    ("scaler", "recommendations", 0, "t"),
    ("scaler", "recommendations", 0, "replicas"),
    ("scaler", "burstsUpdatedAt"),
    ("scaler", "burstRequests"),
    ("scaler", "burstLate"),
    ("scaler", "burstLate", 0, "extraReplicas"),
    ("scaler", "burstLate", 0, "requests"),
    ("scaler", "burstShortfalls"),
    ("scaler", "somethingNew"),
    ("somethingNew",),
]
weird: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([None, -1, -1.5, 1.5, "x", "NaN", "", [], {}, True, 2**70, 1e308, -1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.text(max_size=4),
    st.lists(st.sampled_from([{}, {"t": "x"}, {"extraReplicas": -1, "requests": -1}, 3]), max_size=50),
)


@settings(max_examples=150, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(SMALL_PATHS), value=weird, top=st.sampled_from([None, "gpusInUse", "extra"]))
def test_a_bad_part_of_one_variant_never_costs_the_other_its_memory(
    path: tuple[str | int, ...], value: Any, top: str | None
) -> None:
    raw = copy.deepcopy(STATUS)
    node = raw["variants"][1]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    if top is not None:
        raw[top] = value
    previous = parse_status(raw)  # never raises
    assert previous is not None
    assert previous.variants[0] == parse_status(STATUS).variants[0]  # type: ignore[union-attr]
    outcome = plan(raw)  # never raises
    assert outcome.plans["large"].replicas == 3
