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
        self.get(namespace, name).set()

    def poke_namespace(self, namespace: str) -> None:
        """Wake every loop of ``namespace`` (e.g. all policies when a pool changes)."""
        for (ns, _), event in self._events.items():
            if ns == namespace:
                event.set()

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

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
