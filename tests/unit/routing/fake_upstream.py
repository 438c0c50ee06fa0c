"""A small HTTP/1.1 server on 127.0.0.1 standing in for Triton in the router's unit tests: keep-alive,
Content-Length bodies, every request logged, each answered by :meth:`FakeUpstream.answer`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Handler = Callable[[bytes, bytes, bytes], tuple[int, bytes]]
"""``(method, path, body) -> (status, JSON body)``."""


class FakeUpstream:
    """Answers each request with ``handler(method, path, body)``; a subclass may override
    :meth:`answer` instead (to wait, or to count)."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.log: list[tuple[bytes, bytes, bytes]] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def answer(self, method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
        assert self.handler is not None, "give a handler or override answer()"
        return self.handler(method, path, body)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in lines
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
                self.log.append((method, path, body))
                status, out = await self.answer(method, path, body)
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (status, len(out), out)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
