"""A stand-in for tritonserver's HTTP inference endpoint (KServe v2), enough for ``tritonclient.http``.

``POST /v2/models/<model>/infer`` with a ``[batch, 1]`` BYTES ``TEXT`` input (binary or JSON) is
answered with ``PROBABILITIES`` ``[batch, classes]`` as JSON: label 0 most likely. A text containing
one of ``fail_on`` (in a single-item request only, with ``single_only``) is answered with HTTP 400
and a v2 error body, as Triton answers a failed request.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _bytes_tensor(raw: bytes) -> list[str]:
    texts, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack_from("<I", raw, at)
        texts.append(raw[at + 4 : at + 4 + size].decode("utf-8", "replace"))
        at += 4 + size
    return texts


class FakeTriton:
    """The server's settings and what it saw (``texts``: every text of every request)."""

    def __init__(self, classes: int, fail_on: tuple[str, ...] = (), single_only: bool = False) -> None:
        self.classes = classes
        self.fail_on = fail_on
        self.single_only = single_only
        self.texts: list[str] = []
        self.lock = threading.Lock()
        self.url = ""


def _handler(fake: FakeTriton) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            header_length = int(self.headers.get("Inference-Header-Content-Length", len(body)))
            request = json.loads(body[:header_length])
            tensor = request["inputs"][0]
            if header_length < len(body):
                texts = _bytes_tensor(body[header_length:])
            else:
                texts = [str(t) for t in tensor["data"]]
            with fake.lock:
                fake.texts.extend(texts)
            failing = not fake.single_only or len(texts) == 1
            if failing and any(word in text for text in texts for word in fake.fail_on):
                self._reply(400, {"error": "Failed to process the request(s) for model instance: boom"})
                return
            row = [0.5] + [0.5 / max(fake.classes - 1, 1)] * (fake.classes - 1)
            model = self.path.split("/")[3]
            output = {
                "name": "PROBABILITIES",
                "datatype": "FP32",
                "shape": [len(texts), fake.classes],
                "data": row * len(texts),
            }
            self._reply(200, {"model_name": model, "model_version": "1", "outputs": [output]})

    return Handler


@contextmanager
def fake_triton(
    classes: int, fail_on: tuple[str, ...] = (), single_only: bool = False
) -> Iterator[FakeTriton]:
    """Serve a :class:`FakeTriton` on 127.0.0.1 (a free port) for the block."""
    fake = FakeTriton(classes, fail_on, single_only)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
