"""Bounded LRU response cache with a time to live (off unless the config enables it)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """At most ``max_entries`` values and (with ``max_bytes``) at most that many bytes of them,
    each forgotten ``ttl_seconds`` after it was stored; the least recently used go first when a
    bound is reached.  A value bigger than ``max_bytes`` on its own is not stored."""

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_seconds > 0")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[float, V, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size(self) -> int:
        """The sizes of the values held, as given to :meth:`put`."""
        return self._bytes

    def get(self, key: bytes) -> V | None:
        """The live value for ``key`` (refreshing its LRU position), or None."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value, size = item
        if self._clock() >= expires:
            del self._data[key]
            self._bytes -= size
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: bytes, value: V, size: int = 0) -> None:
        """Store ``value`` of ``size`` bytes; evicts the least recently used entries while over a
        bound.  A value over ``max_bytes`` is not stored (nor kept under ``key`` from before)."""
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        if self.max_bytes is not None and size > self.max_bytes:
            return
        data[key] = (self._clock() + self.ttl_seconds, value, size)
        self._bytes += size
        limit = self.max_bytes
        while len(data) > self.max_entries or (limit is not None and self._bytes > limit):
            _, (_, _, evicted) = data.popitem(last=False)
            self._bytes -= evicted
