"""A scorer factory for the router's config tests: a router started with ``scorer_factory=load``
(what ``--scorer-factory unit.routing.gated_scorer:load`` sets) loads the torch scorer of a config
``scorer: {kind: torch, path: <name>}`` with it.  It counts its loads by path, and a load of a path
with a :class:`Gate` waits until the test opens the gate (in whatever thread the router loads it),
so a test sees what the router does while a slow scorer (a torch model) loads.

A module of its own: ``--scorer-factory`` imports it by name, and pytest imports test modules
under other names, so a factory in a test module would be a second copy with its own counts.
:data:`FACTORY` is also what the tests of configs naming a factory (refused) name."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from modelpool.routing.scoring import HeuristicScorer

FACTORY = "unit.routing.gated_scorer:load"

STUCK_S = 5.0
"""How long a gated load waits for its gate at most: a code that loads the scorer on the event loop
never lets the test open it, and must not hang the run (not an assertion: the tests check order)."""

LOADS: list[str] = []
"""The path of each load, in order."""

EVENTS: list[str] = []
"""What happened, in order: ``loaded <path>`` when a gated load ends; tests add their own."""


@dataclass
class Gate:
    """A load of its path waits for ``opened``; ``entered`` is set once the load has begun."""

    entered: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)


GATES: dict[str, Gate] = {}


def gate(path: str) -> Gate:
    """A new gate for the loads of ``path``."""
    GATES[path] = Gate()
    return GATES[path]


def scorer(path: str) -> dict[str, str]:
    """The ``scorer`` section of a config that loads ``path`` with :func:`load` (on a router
    started with ``scorer_factory=load``)."""
    return {"kind": "torch", "path": path}


def load(path: str) -> HeuristicScorer:
    """The factory: a heuristic scorer, once the gate of ``path`` (if any) opens."""
    LOADS.append(path)
    waiting = GATES.get(path)
    if waiting is not None:
        waiting.entered.set()
        waiting.opened.wait(STUCK_S)
        EVENTS.append(f"loaded {path}")
    return HeuristicScorer()
