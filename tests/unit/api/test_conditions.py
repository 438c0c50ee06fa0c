from __future__ import annotations

from modelpool.api import conditions as c


def test_transition_time_moves_only_on_status_change() -> None:
    first = c.set_condition([], c.READY, "False", "Pending", "waiting", 1, now="2026-01-01T00:00:00Z")
    same = c.set_condition(first, c.READY, "False", "StillPending", "still", 2, now="2026-01-01T00:05:00Z")
    flipped = c.set_condition(same, c.READY, "True", "AllReplicasReady", "ok", 2, now="2026-01-01T00:09:00Z")
    assert same[0].last_transition_time == "2026-01-01T00:00:00Z"
    assert same[0].reason == "StillPending"
    assert same[0].observed_generation == 2
    assert flipped[0].last_transition_time == "2026-01-01T00:09:00Z"
    assert c.is_true(flipped, c.READY)


def test_conditions_are_keyed_by_type_and_sorted() -> None:
    conds = c.set_condition([], c.READY, "True", "R", "", 1, now="t")
    conds = c.set_condition(conds, c.ACCEPTED, "True", "A", "", 1, now="t")
    conds = c.set_condition(conds, c.READY, "False", "R2", "", 1, now="t")
    assert [x.type for x in conds] == [c.ACCEPTED, c.READY]
    assert c.find(conds, c.READY) is not None
    assert c.find(conds, "Nope") is None
