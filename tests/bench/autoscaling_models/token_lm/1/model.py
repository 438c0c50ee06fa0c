"""Toy language model for the autoscaling calibration (Python backend; project I/O contract).

Its cost follows an LLM's shape: a *prefill* over every context token (one matrix product per layer
over all tokens at once) and a *decode* step per generated token (one vector-matrix product per
layer, strictly sequential). The input text is ``"<generated> <word> <word> ..."``: the first word
is the number of tokens to generate, the remaining words are the context tokens. Outputs are the
contract's ``PROBABILITIES`` (softmax over 4 classes of the final state) and ``LABEL``.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        hidden = int(params.get("hidden", {}).get("string_value", "512"))
        layers = int(params.get("layers", {}).get("string_value", "4"))
        rng = np.random.default_rng(0)
        scale = 1.0 / np.sqrt(hidden)
        self.weights = [
            rng.standard_normal((hidden, hidden)).astype(np.float32) * scale for _ in range(layers)
        ]
        self.embed = rng.standard_normal((997, hidden)).astype(np.float32)
        self.head = rng.standard_normal((hidden, 4)).astype(np.float32)

    def _run(self, text):
        words = text.split()
        generated = int(words[0]) if words and words[0].isdigit() else 1
        ids = np.array([hash(w) % 997 for w in words[1:]] or [0])
        x = self.embed[ids]
        for w in self.weights:  # prefill: all context tokens at once
            x = np.tanh(x @ w)
        state = x[-1]
        for _ in range(generated):  # decode: one token at a time
            for w in self.weights:
                state = np.tanh(state @ w)
        logits = state @ self.head
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return probs.astype(np.float32), int(np.argmax(probs))

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            rows, labels = [], []
            for item in raw:
                text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                row, label = self._run(text)
                rows.append(row)
                labels.append([label])
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("PROBABILITIES", np.stack(rows)),
                        pb_utils.Tensor("LABEL", np.asarray(labels, dtype=np.int64)),
                    ]
                )
            )
        return responses
