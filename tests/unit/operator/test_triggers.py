"""Which watch events of a ModelPool wake its reconcile loop."""

from __future__ import annotations

from modelpool.controllers.triggers import GenerationFilter


def test_own_status_writes_do_not_wake_the_pool_but_spec_changes_do() -> None:
    seen = GenerationFilter()
    assert seen.changed("ns", "bank", None, 1)  # the first listing
    assert not seen.changed("ns", "bank", "MODIFIED", 1)  # a status write: same generation
    assert not seen.changed("ns", "bank", "MODIFIED", 1)
    assert seen.changed("ns", "bank", "MODIFIED", 2)  # the spec changed
    assert seen.changed("ns", "other", "MODIFIED", 2)  # another pool is its own
    assert not seen.changed("ns", "bank", "MODIFIED", 2)


def test_a_deleted_and_recreated_pool_is_new_again() -> None:
    seen = GenerationFilter()
    assert seen.changed("ns", "bank", "ADDED", 1)
    assert seen.changed("ns", "bank", "DELETED", 1)
    assert seen.changed("ns", "bank", "ADDED", 1)  # same name, generation 1 again
    assert not seen.changed("ns", "bank", "MODIFIED", 1)
