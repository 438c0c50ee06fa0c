"""Reading and writing the ``status`` of this operator's own objects."""

from __future__ import annotations

import copy
import logging
from typing import Any, TypeVar

from pydantic import ValidationError

from modelpool.api.base import ApiModel
from modelpool.kube import KubeClient

S = TypeVar("S", bound=ApiModel)
Path = tuple[str | int, ...]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 12
"""Repair rounds: each drops the refused parts, one level up where a part cannot be dropped alone
(a required field drops the entry holding it); deeper than any status model nests."""


def parse_stored(model: type[S], raw: Any) -> S | None:
    """The stored status, or None when absent or unreadable (it is then rebuilt).

    A status written by another version of the operator or edited by hand may hold parts the model
    refuses (a negative count, a string for a number, an entry without a required field, a field
    it does not know). Only those parts are dropped — a field falls back to its default, a list
    entry or an optional object is left out — and the rest is kept (the other variants' scaler
    memory above all: without it a restarted operator scales down at once). A warning names what
    was dropped; the next status write replaces it.
    """
    if not raw:
        return None
    parsed, dropped = salvage_stored(model, raw)
    if dropped:
        logger.warning(
            "ignored unreadable parts of a stored %s (rebuilt on the next status write): %s",
            model.__name__,
            "; ".join(dropped),
        )
    return parsed


def salvage_stored(model: type[S], raw: Any) -> tuple[S | None, list[str]]:
    """``model`` parsed from ``raw`` without the parts it refuses, and one line per dropped part
    (``variants.1.scaler.burstLate.0.requests: Input should be greater than or equal to 0``)."""
    data = raw
    dropped: list[str] = []
    refused: dict[Path, str]
    for _ in range(_MAX_ROUNDS):
        try:
            return model.model_validate(data), dropped
        except ValidationError as err:
            errors = err.errors()
        if data is raw:
            data = copy.deepcopy(raw)
        refused = {}
        for e in errors:
            loc = tuple(e["loc"])
            path = _existing_prefix(data, loc)
            inner = ".".join(str(p) for p in loc[len(path) :])
            refused[path] = f"{inner}: {e['msg']}" if inner else str(e["msg"])
        paths = _outermost(refused)
        if () in paths:
            return None, [*dropped, f"the whole status: {refused[()]}"]
        for path in sorted(paths, reverse=True):  # later list entries first: indices stay valid
            _delete(data, path)
            dropped.append(f"{'.'.join(str(p) for p in path)}: {refused[path]}")
    return None, [*dropped, "the whole status: still unreadable"]


def _existing_prefix(data: Any, loc: Path) -> Path:
    """The longest start of ``loc`` that exists in ``data`` (a missing field: the object holding it)."""
    node = data
    for i, key in enumerate(loc):
        present = (isinstance(node, dict) and isinstance(key, str) and key in node) or (
            isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        )
        if not present:
            return loc[:i]
        node = node[key]
    return loc


def _outermost(paths: dict[Path, str]) -> set[Path]:
    """The paths no other path contains (dropping the outer part drops the inner one)."""
    return {p for p in paths if not any(p[:n] in paths for n in range(len(p)))}


def _delete(data: Any, path: Path) -> None:
    """Remove the part at ``path`` (gone already when it was shared with one removed before)."""
    node = data
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(last, int) and last < len(node):
        del node[last]


async def write_status(kube: KubeClient, object_path: str, status: ApiModel, old: Any) -> bool:
    """Merge-patch ``/status`` only when it differs from what is stored; True when written."""
    wire = status.to_wire()
    if wire == old:
        return False
    await kube.merge_patch(object_path + "/status", {"status": wire})
    return True
