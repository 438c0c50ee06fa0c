"""Calling an exported variant on a running Triton server (HTTP, the project's model I/O contract)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def http_client(url: str, concurrency: int = 1, timeout_s: float = 60.0) -> Any:
    """A ``tritonclient.http.InferenceServerClient`` for ``url`` (``http://host:port`` or ``host:port``)."""
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(
        url.removeprefix("http://"),
        concurrency=concurrency,
        connection_timeout=timeout_s,
        network_timeout=timeout_s,
    )


def infer_texts(client: Any, model: str, texts: Sequence[str]) -> FloatArray:
    """``PROBABILITIES`` of one request carrying ``texts`` as a ``[batch, 1]`` BYTES tensor."""
    import tritonclient.http as httpclient

    batch = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    tensor = httpclient.InferInput("TEXT", list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch)
    result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput("PROBABILITIES")])
    return np.asarray(result.as_numpy("PROBABILITIES"), dtype=np.float32)


def classify_all(client: Any, model: str, texts: Sequence[str], batch_size: int = 32) -> FloatArray:
    """Probabilities for every text, ``batch_size`` texts per request (at most the model's max_batch_size)."""
    parts = [infer_texts(client, model, texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
