"""The large variant (sentence encoder + trained head) and its int8-quantized twin.

The head is trained on cached encoder embeddings. ``EncoderClassifier`` joins encoder and head into
one ``nn.Module`` so that the quantized variant is ``quantize_dynamic_int8`` of that whole module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelpool.models.encoder import (
    EMBEDDING_DIM,
    ENCODER_NAME,
    ENCODER_PACKAGE,
    encoder_digest,
    load_encoder,
    quantize_dynamic_int8,
)
from modelpool.models.torchutil import module_base, optimizer_step

FloatArray = npt.NDArray[np.float32]
HEAD_WEIGHTS = "head.pt"
LARGE_META = "large.json"


@dataclass(frozen=True)
class HeadTrainingConfig:
    """Hyper-parameters of the classification head on frozen embeddings."""

    hidden: int = 0
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 0.01
    weight_decay: float = 1e-5
    dropout: float = 0.1
    seed: int = 0


def build_head(num_classes: int, config: HeadTrainingConfig) -> Any:
    """A linear head, or a one-hidden-layer MLP when ``config.hidden`` > 0."""
    from torch import nn

    if config.hidden <= 0:
        return nn.Sequential(nn.Linear(EMBEDDING_DIM, num_classes))
    return nn.Sequential(
        nn.Linear(EMBEDDING_DIM, config.hidden),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, num_classes),
    )


def train_head(
    embeddings: FloatArray, labels: npt.NDArray[np.int64], num_classes: int, config: HeadTrainingConfig
) -> Any:
    """Train a head on (embedding, label) pairs; returns the torch module in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = build_head(num_classes, config)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    head.train()
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            optimizer_step([optimizer], nn.functional.cross_entropy(head(x[rows]), y[rows]))
    return head.eval()


def head_probabilities(head: Any, embeddings: FloatArray) -> FloatArray:
    """Softmax of the head's scores on precomputed embeddings."""
    import torch

    with torch.inference_mode():
        logits = head(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)))
        return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def cross_fitted_probabilities(
    embeddings: FloatArray,
    labels: npt.NDArray[np.int64],
    num_classes: int,
    config: HeadTrainingConfig,
    folds: int = 5,
) -> FloatArray:
    """Out-of-fold head probabilities for every training row (honest soft labels for distillation)."""
    rng = np.random.default_rng(config.seed + 1)
    fold_of = rng.permutation(len(labels)) % folds
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    for fold in range(folds):
        held = fold_of == fold
        head = train_head(embeddings[~held], labels[~held], num_classes, config)
        probs[held] = head_probabilities(head, embeddings[held])
    return probs


class EncoderClassifier(module_base()):  # type: ignore[misc]
    """Sentence encoder followed by the classification head, as one torch module."""

    def __init__(self, encoder: Any, head: Any, label_names: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.label_names = tuple(label_names)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        """Class probabilities, one row per text."""
        import torch

        with torch.inference_mode():
            embeddings = self.encoder.encode(
                list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
            )
            return torch.softmax(self.head(embeddings), dim=1).cpu().numpy().astype(np.float32)


def save_large(directory: Path, head: Any, label_names: Sequence[str], config: HeadTrainingConfig) -> None:
    """Write the head weights and ``large.json`` (labels, head shape, encoder identity)."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), directory / HEAD_WEIGHTS)
    meta = {
        "label_names": list(label_names),
        "head": asdict(config),
        "encoder": {"name": ENCODER_NAME, "package": ENCODER_PACKAGE, "digest": encoder_digest()},
    }
    (directory / LARGE_META).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def check_encoder(directory: Path, meta: dict[str, Any]) -> None:
    """Refuse a head trained on other encoder weights than the installed ones: its inputs would be
    embeddings from another space, and every answer silently wrong."""
    recorded = (meta.get("encoder") or {}).get("digest")
    if not recorded:
        return
    installed = encoder_digest()
    if installed != recorded:
        raise RuntimeError(
            f"{directory / LARGE_META}: the head was trained on encoder weights with digest {recorded}, "
            f"but the installed {ENCODER_PACKAGE} has {installed}; install the encoder it was trained "
            "with, or retrain and re-export the model"
        )


def load_large(directory: Path, quantized: bool = False, device: str = "cpu") -> EncoderClassifier:
    """Load the large variant from ``directory``; ``quantized`` applies dynamic int8 to the whole module.

    Raises ``RuntimeError`` when the installed encoder is not the one the head was trained on."""
    import torch

    meta = json.loads((directory / LARGE_META).read_text(encoding="utf-8"))
    check_encoder(directory, meta)
    label_names = meta["label_names"]
    config = HeadTrainingConfig(**meta["head"])
    head = build_head(len(label_names), config)
    head.load_state_dict(torch.load(directory / HEAD_WEIGHTS, map_location="cpu", weights_only=True))
    model = EncoderClassifier(load_encoder(device=device), head.eval(), label_names).eval()
    if quantized:
        if device != "cpu":
            raise ValueError(
                "int8 dynamic quantization runs on CPU only: load the quantized variant with device='cpu'"
            )
        model = quantize_dynamic_int8(model, inplace=True)
    moved: EncoderClassifier = model.to(device) if device != "cpu" else model
    return moved
