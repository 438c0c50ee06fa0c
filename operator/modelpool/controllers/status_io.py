"""Reading and writing the ``status`` of this operator's own objects."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from modelpool.api.base import ApiModel
from modelpool.kube import KubeClient

S = TypeVar("S", bound=ApiModel)


def parse_stored(model: type[S], raw: Any) -> S | None:
    """The stored status, or None when absent or unreadable (it is then rebuilt)."""
    if not raw:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


async def write_status(kube: KubeClient, object_path: str, status: ApiModel, old: Any) -> bool:
    """Merge-patch ``/status`` only when it differs from what is stored; True when written."""
    wire = status.to_wire()
    if wire == old:
        return False
    await kube.merge_patch(object_path + "/status", {"status": wire})
    return True
