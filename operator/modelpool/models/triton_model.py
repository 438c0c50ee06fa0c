"""Triton Python-backend model for every ModelPool variant (copied to ``<model>/1/model.py`` on export).

Contract: input ``TEXT`` (BYTES ``[batch, 1]``), outputs ``PROBABILITIES`` (FP32 ``[batch, classes]``)
and ``LABEL`` (INT64 ``[batch, 1]``). The ``variant`` parameter of ``config.pbtxt`` picks what to load
from ``1/artifacts``; the code it needs is vendored in ``1/runtime`` so the repository is self-contained.
All requests of one dynamic batch are answered with one forward pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

_VERSION_DIR = Path(__file__).resolve().parent
if str(_VERSION_DIR / "runtime") not in sys.path:
    sys.path.insert(0, str(_VERSION_DIR / "runtime"))

import triton_python_backend_utils as pb_utils  # noqa: E402

from modelpool.models.runtime import load_variant  # noqa: E402


def _texts(request: Any) -> list[str]:
    raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    return [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in raw]


def instance_device(args: dict[str, str]) -> str:
    """The torch device of this model instance: ``cuda:<model_instance_device_id>`` for a KIND_GPU
    instance (Triton gives each instance of a multi-GPU group its own device id), else ``cpu``."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id') or 0)}"
    return "cpu"


class TritonPythonModel:
    """Serves one variant."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the variant named by the ``variant`` parameter onto this instance's device."""
        config = json.loads(args["model_config"])
        variant = config["parameters"]["variant"]["string_value"]
        device = instance_device(args)
        threads = config["parameters"].get("torch_threads", {}).get("string_value", "")
        if threads and variant != "small":
            import torch

            torch.set_num_threads(int(threads))
        self.predictor = load_variant(variant, _VERSION_DIR / "artifacts", device)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One forward pass over all texts of all requests, then one response per request."""
        per_request = [_texts(request) for request in requests]
        texts = [text for batch in per_request for text in batch]
        probs = self.predictor.predict_proba(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        responses = []
        start = 0
        for batch in per_request:
            rows = np.ascontiguousarray(probs[start : start + len(batch)], dtype=np.float32)
            start += len(batch)
            labels = rows.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("PROBABILITIES", rows), pb_utils.Tensor("LABEL", labels)]
                )
            )
        return responses
