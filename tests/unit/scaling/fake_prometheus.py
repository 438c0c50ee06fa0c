"""A stand-in for Prometheus' HTTP API on 127.0.0.1: ``/api/v1/query`` (and every other GET) is
answered with ``answer(query)``, so a test says exactly what each PromQL query returns."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Answer = Callable[[str], tuple[int, bytes]]
"""What the fake Prometheus answers to one query: (HTTP status, body)."""


class FakePrometheus:
    """An HTTP server on 127.0.0.1 answering ``/api/v1/query`` with ``answer(query)``; serve it
    with :meth:`serving`."""

    def __init__(self, answer: Answer = lambda _q: (200, b"{}")) -> None:
        self.answer = answer
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                status, body = owner.answer(query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def serving(self) -> Iterator[FakePrometheus]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=5)
