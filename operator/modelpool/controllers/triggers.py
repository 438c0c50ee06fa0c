"""Wake-up flags for the per-object reconcile loops, keyed by (namespace, name)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class StopFlag(Protocol):
    def __bool__(self) -> bool: ...


class Triggers:
    """Watch events poke a flag; the object's loop waits on it with a resync timeout."""

    POLL_SECONDS = 0.1

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def get(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def poke(self, namespace: str, name: str) -> None:
        """Wake the object's loop. An object without a loop (not started yet, or gone: the watch
        events of a deleted pool's children come after its loop ended) gets no flag: a loop's
        first pass runs unpoked, and a flag made here would be kept for an object long gone."""
        event = self._events.get((namespace, name))
        if event is not None:
            event.set()

    def poke_namespace(self, namespace: str) -> None:
        """Wake every loop of ``namespace`` (e.g. all policies when a pool changes)."""
        for (ns, _), event in self._events.items():
            if ns == namespace:
                event.set()

    def forget(self, namespace: str, name: str, event: asyncio.Event | None = None) -> None:
        """Drop the object's flag; with ``event``, only if it is still that one (not the flag of a
        loop started since for an object of the same name)."""
        key = (namespace, name)
        if event is None or self._events.get(key) is event:
            self._events.pop(key, None)

    async def wait(self, event: asyncio.Event, *, stopped_flag: StopFlag, seconds: float) -> bool:
        """Wait until poked, stopped or timed out; True when poked."""
        deadline = time.monotonic() + seconds
        while not stopped_flag and time.monotonic() < deadline:
            if event.is_set():
                return True
            try:
                await asyncio.wait_for(
                    event.wait(), timeout=min(self.POLL_SECONDS * 10, deadline - time.monotonic())
                )
            except TimeoutError:
                continue
        return event.is_set()


class GenerationFilter:
    """Tells a watch event that can change what a pass does from one that only carries the
    operator's own status write.

    Every pass of a pool writes its status when the decision moved, and the watch event of that
    write woke the pool's loop for a second pass that found nothing to do (two passes per
    decision, each a GET and three LISTs). A pool's spec is all a pass reads from it, and a spec
    change bumps ``metadata.generation``; a status or metadata change does not need a pass (the
    resync still comes).
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def changed(self, namespace: str, name: str, event_type: str | None, generation: int | None) -> bool:
        """True for the first event of an object, a deletion, and a new generation."""
        key = (namespace, name)
        if event_type == "DELETED":
            self._seen.pop(key, None)
            return True
        current = int(generation or 0)
        if self._seen.get(key) == current:
            return False
        self._seen[key] = current
        return True
