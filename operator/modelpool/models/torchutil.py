"""Small torch helpers shared by the trainers (torch is imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def module_base() -> Any:
    """``torch.nn.Module``, for subclassing without a module-level torch import."""
    from torch import nn

    return nn.Module


def optimizer_step(optimizers: Sequence[Any], loss: Any) -> None:
    """Zero the gradients of every optimizer, back-propagate ``loss``, step every optimizer."""
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def sparse_and_dense_optimizers(sparse: Any, dense: Any, learning_rate: float) -> list[Any]:
    """SparseAdam for a sparse embedding's parameters and Adam for the rest."""
    import torch

    return [
        torch.optim.SparseAdam(list(sparse.parameters()), lr=learning_rate),
        torch.optim.Adam(dense.parameters(), lr=learning_rate),
    ]
