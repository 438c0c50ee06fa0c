"""A small HTTP/1.1 server on 127.0.0.1 standing in for Triton in the router's unit tests: keep-alive,
Content-Length bodies, every request logged, each answered by :meth:`FakeUpstream.answer`; with
``watch_close``, a request whose connection the client closes while it is answered is cut off and
logged in ``abandoned``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

Handler = Callable[[bytes, bytes, bytes], tuple[int, bytes]]
"""``(method, path, body) -> (status, JSON body)``."""


class FakeUpstream:
    """Answers each request with ``handler(method, path, body)``; a subclass may override
    :meth:`answer` instead (to wait, or to count)."""

    def __init__(self, handler: Handler | None = None, watch_close: bool = False) -> None:
        self.handler = handler
        self.watch_close = watch_close
        self.log: list[tuple[bytes, bytes, bytes]] = []
        self.abandoned: list[tuple[bytes, bytes, bytes]] = []  # cut off by a close (watch_close)
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
                if self.watch_close:
                    answered = await self._answer_or_close(reader, method, path, body)
                    if answered is None:
                        return
                    status, out = answered
                else:
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

    async def _answer_or_close(
        self, reader: asyncio.StreamReader, method: bytes, path: bytes, body: bytes
    ) -> tuple[int, bytes] | None:
        """:meth:`answer`, unless the client closes the connection first (None; the request is
        logged in ``abandoned``).  A client that sends more before its answer (the router never
        does) counts as gone too."""
        answering = asyncio.ensure_future(self.answer(method, path, body))
        closed = asyncio.ensure_future(reader.read(1))
        await asyncio.wait({answering, closed}, return_when=asyncio.FIRST_COMPLETED)
        if answering.done():
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed  # the reader is free for the next request
            return answering.result()
        answering.cancel()
        self.abandoned.append((method, path, body))
        return None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
