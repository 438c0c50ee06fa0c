"""modelpool_status_condition: one series per (object, condition type, status), 1 for the current
status and 0 for the others (kube-state-metrics' shape), changed with the status, and removed with
a condition type the status drops and with a deleted object; modelpool_build_info is always there."""

from __future__ import annotations

from prometheus_client import generate_latest

from modelpool import __version__
from modelpool.scaling.metrics import REGISTRY, forget_conditions, record_conditions

METRIC = "modelpool_status_condition"


def _statuses(kind: str, namespace: str, name: str, type_: str) -> dict[str, float | None]:
    labels = {"kind": kind, "namespace": namespace, "name": name, "type": type_}
    return {
        s: REGISTRY.get_sample_value(METRIC, {**labels, "status": s}) for s in ("True", "False", "Unknown")
    }


def _lines(namespace: str, name: str) -> list[str]:
    text = generate_latest(REGISTRY).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(METRIC + "{") and f'name="{name}"' in line and f'namespace="{namespace}"' in line
    ]


def test_each_condition_is_three_series_with_a_one_for_its_status() -> None:
    record_conditions("ModelPool", "ns-set", "pool", [("Ready", "True"), ("Degraded", "False")])
    assert _statuses("ModelPool", "ns-set", "pool", "Ready") == {"True": 1.0, "False": 0.0, "Unknown": 0.0}
    assert _statuses("ModelPool", "ns-set", "pool", "Degraded") == {"True": 0.0, "False": 1.0, "Unknown": 0.0}
    assert len(_lines("ns-set", "pool")) == 6


def test_a_changed_status_moves_the_one() -> None:
    record_conditions("ModelPool", "ns-change", "pool", [("Ready", "True")])
    record_conditions("ModelPool", "ns-change", "pool", [("Ready", "False")])
    assert _statuses("ModelPool", "ns-change", "pool", "Ready") == {"True": 0.0, "False": 1.0, "Unknown": 0.0}
    record_conditions("ModelPool", "ns-change", "pool", [("Ready", "Unknown")])
    assert _statuses("ModelPool", "ns-change", "pool", "Ready") == {"True": 0.0, "False": 0.0, "Unknown": 1.0}


def test_a_status_outside_the_three_counts_as_unknown() -> None:
    record_conditions("RoutingPolicy", "ns-odd", "policy", [("Programmed", "maybe")])
    assert _statuses("RoutingPolicy", "ns-odd", "policy", "Programmed") == {
        "True": 0.0,
        "False": 0.0,
        "Unknown": 1.0,
    }


def test_a_condition_type_the_status_drops_loses_its_series() -> None:
    record_conditions("ModelPool", "ns-drop", "pool", [("Ready", "True"), ("MetricsAvailable", "False")])
    record_conditions("ModelPool", "ns-drop", "pool", [("Ready", "True")])
    assert _statuses("ModelPool", "ns-drop", "pool", "MetricsAvailable") == {
        "True": None,
        "False": None,
        "Unknown": None,
    }
    assert len(_lines("ns-drop", "pool")) == 3


def test_a_deleted_object_leaves_no_series_and_the_others_keep_theirs() -> None:
    record_conditions("ModelPool", "ns-del", "gone", [("Ready", "False"), ("GPUBudgetFits", "True")])
    record_conditions("ModelPool", "ns-del", "kept", [("Ready", "True")])
    # A policy of the same name is another object.
    record_conditions("RoutingPolicy", "ns-del", "gone", [("Accepted", "True")])
    forget_conditions("ModelPool", "ns-del", "gone")
    assert [line for line in _lines("ns-del", "gone") if 'kind="ModelPool"' in line] == []
    assert _statuses("RoutingPolicy", "ns-del", "gone", "Accepted")["True"] == 1.0
    assert _statuses("ModelPool", "ns-del", "kept", "Ready")["True"] == 1.0
    forget_conditions("RoutingPolicy", "ns-del", "gone")
    assert _lines("ns-del", "gone") == []
    forget_conditions("ModelPool", "ns-del", "never-recorded")  # nothing to remove: no error


def test_objects_of_one_name_in_two_namespaces_have_their_own_series() -> None:
    record_conditions("ModelPool", "ns-a", "same", [("Ready", "True")])
    record_conditions("ModelPool", "ns-b", "same", [("Ready", "False")])
    assert _statuses("ModelPool", "ns-a", "same", "Ready")["True"] == 1.0
    assert _statuses("ModelPool", "ns-b", "same", "Ready")["True"] == 0.0


def test_build_info_is_exported_from_the_start() -> None:
    assert REGISTRY.get_sample_value("modelpool_build_info", {"version": __version__}) == 1.0
