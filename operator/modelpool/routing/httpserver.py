"""A small HTTP/1.1 server on asyncio protocols and ``httptools``.

It parses requests with keep-alive and pipelining (answered in order), refuses bodies over a
size limit with 413 as soon as the headers or the body show it, and hands each complete
request to an async handler.  When the client goes away, the request it waits for is cancelled
(the handler's task, or what a :data:`NowHandler` returned).  What one client can make it hold is
bounded: answers it does not read (:data:`WRITE_BUFFER_HIGH`, :data:`WRITE_TIMEOUT_S`), a request
trickled in (:data:`HEAD_TIMEOUT_S`, :data:`BODY_TIMEOUT_S`), connections (:data:`MAX_CONNECTIONS`).
The server accepts connections itself (:class:`_Acceptor`), so that one it cannot serve, over the
connection cap or with the process out of file descriptors, is answered 503 on the spot instead of
being closed unanswered.  No framework sits between the socket and the router, which keeps the
added latency low (see docs/router.md for the measurements).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

from modelpool.routing.fdlimit import soft_limit

logger = logging.getLogger(__name__)

_MAX_PIPELINED = 32
MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers: more gets 431 (httptools would buffer them without a bound)."""
READ_TIMEOUT_S = 60.0
"""A client that sends nothing for this long in the middle of a request gets 408 and is closed
(nginx's client_body_timeout)."""
HEAD_TIMEOUT_S = 60.0
"""A request whose line and headers are not complete this long after their first byte gets 408
and is closed, however slowly they trickle in (nginx's client_header_timeout)."""
IDLE_TIMEOUT_S = 75.0
"""A keep-alive connection with no request for this long is closed (nginx's keepalive_timeout);
above the 60 s idle timeout of common load balancers and client pools, so they close first."""
BODY_TIMEOUT_S = 60.0
"""A request body not complete this long after its headers (or after the ``100 Continue`` it waited
for) gets 408 and the connection is closed, however slowly it trickles in: the read timeout alone
starts again with every byte."""
WRITE_BUFFER_HIGH = 256 * 1024
"""Bytes of answers a connection holds unsent at most (a client that reads slower than it asks, or
not at all): above it the server answers none of the connection's requests and reads no more from
it, until the client has read the buffer down to a quarter of this (asyncio's flow control).  One
answer being written when the mark is passed still goes into the buffer."""
WRITE_TIMEOUT_S = 60.0
"""A connection whose unsent answers make no progress for this long (its write buffer over
:data:`WRITE_BUFFER_HIGH`, or it is closing with answers unsent, and not a byte of them goes out)
is closed at once; a client that keeps reading gets the whole answer however long it takes, as
with nginx's send_timeout (between two successive writes, not for the whole transfer)."""
MAX_CONNECTIONS = 4096
"""Client connections open at once; one more is answered 503 and closed at once, so that clients
cannot take every file descriptor of the process (its open-files limit must be above this and the
router's connections to the variants: see :mod:`modelpool.routing.fdlimit`)."""
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_SECONDS = 2.0
_ACCEPT_BATCH = 128
"""Connections accepted per wake-up of the listening socket before the loop runs other work."""
_ACCEPT_PAUSE_S = 0.5
"""How long accepting stops after an error that accepting again at once would only repeat."""
MAX_LINGERING_REFUSALS = 8
"""Refused connections kept open (up to ``_LINGER_SECONDS``) for their client to read the 503 and
close: each holds a file descriptor, so the rest are closed as soon as their 503 is written."""
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})
_OUT_OF_FILES_LOG_S = 60.0
"""A process out of file descriptors says so in its log at most this often."""
DRAIN_SECONDS = 25.0
"""How long a stopping server answers what it has received: under a pod's default 30 s grace."""


@dataclass(slots=True)
class Request:
    method: bytes
    path: bytes  # without the query string
    query: bytes
    headers: dict[bytes, bytes]  # lower-case names; the last value wins
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"


def json_response(status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers or [])


def error_response(status: int, message: str) -> Response:
    """``{"error": message}``, the shape Triton and tritonclient use."""
    return json_response(status, {"error": message})


class Cancellable(Protocol):
    """Work in flight for a request (an :class:`asyncio.Task` is one)."""

    def cancel(self) -> object: ...


Handler = Callable[[Request], Awaitable[Response]]
Respond = Callable[[Response], None]
NowHandler = Callable[[Request, Respond], Cancellable | None]
"""Takes a request on the spot and later calls ``respond`` once, returning what to cancel should
the client go away before that; or leaves it to the :data:`Handler` (None).  Used only while the
connection has nothing else in flight, so responses keep the requests' order."""

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
# "HTTP/1.1 200 OK\r\ncontent-type: " by status, filled as statuses are seen
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\ncontent-type: " % (status, _REASONS.get(status, b"Unknown"))
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status] = line
    return line


def encode_response(resp: Response, keep_alive: bool) -> bytes:
    """Serialize a response."""
    parts = [
        _STATUS_LINES.get(resp.status) or _status_line(resp.status),
        resp.content_type,
        b"\r\ncontent-length: ",
        str(len(resp.body)).encode(),
        b"\r\n" if keep_alive else b"\r\nconnection: close\r\n",
    ]
    for name, value in resp.headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", resp.body)
    return b"".join(parts)


class _Connections:
    """The open connections of one listener, and whether it is draining."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout_s: float,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.open: set[_HttpProtocol] = set()
        self.draining = False
        self.last_change = loop.time()  # a connection opened or closed, or the drain began
        self.read_timeout_s = read_timeout_s
        self.head_timeout_s = head_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.body_timeout_s = body_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.opening = 0  # accepted, their transport not yet made
        self.refused: dict[str, int] = {}  # connections answered 503 at once, by reason

    def full(self) -> bool:
        """Whether one more connection is over :attr:`max_connections`."""
        return len(self.open) + self.opening >= self.max_connections

    async def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refuse the requests whose client stalled mid-way or whose head or body takes too long,
        close the keep-alive connections idle for too long and those whose answers stay unsent (a
        timer per request would cost the hot path; a look at every connection a few times per
        timeout costs nothing per request)."""
        shortest = min(
            self.read_timeout_s, self.head_timeout_s, self.idle_timeout_s, self.body_timeout_s,
            self.write_timeout_s,
        )  # fmt: skip
        while True:
            await asyncio.sleep(min(1.0, shortest / 4))
            now = loop.time()
            for conn in list(self.open):
                conn.sweep(now, self)


class _HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self,
        handler: Handler,
        max_body: Callable[[], int],
        loop: asyncio.AbstractEventLoop,
        connections: _Connections,
        now: NowHandler | None = None,
    ) -> None:
        self._connections = connections
        self._draining = False  # answer what was received, then close
        self._handler = handler
        self._now = now
        self._max_body = max_body
        self._loop = loop
        # Made on connect, dropped on close: the parser holds this protocol's callbacks, so the
        # pair is a reference cycle that only the cyclic GC (rare in serve()) would free.
        self._parser: httptools.HttpRequestParser | None = None
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[Request, bool]] = deque()
        # One worker task per connection answers the queued requests in order; between
        # requests it waits on ``_wakeup`` (cheaper than a task per request).  A request that
        # arrives while nothing is in flight may be taken on the spot by ``now`` instead.
        self._answering = False  # a request is being answered (by the worker or on the spot)
        self._keep_alive_now = True  # of the request taken on the spot
        self._in_flight: Cancellable | None = None  # the work for the request taken on the spot
        self._last_keep_alive = True  # did the last complete request ask to keep the connection
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._limit = 0  # max_body() for the message being read
        self._refused = False
        self.opening = False  # counted in _Connections.opening (accepted, connection_made not yet run)
        self._paused = False  # reading paused: too many requests queued, or writing paused
        self._write_paused = False  # the write buffer is over WRITE_BUFFER_HIGH: answer nothing more
        self._write_stuck_since: float | None = None  # since when unsent answers made no progress
        self._unsent_seen = 0  # the write buffer's size at the last look (pause_writing, sweep)
        self._closing = False
        self._in_head = False  # between a message's first byte and the end of its headers
        self._in_message = False  # between a message's first byte and its end
        self._last_read = loop.time()
        self._last_write = self._last_read  # the last response written
        self._head_started = self._last_read  # the first byte of the current head
        self._body_started = self._last_read  # the end of the current head (or its 100 Continue)
        self._continue_due = False  # an `Expect: 100-continue` waits for the responses before it
        self._head_bytes = 0  # bytes of the current head, counted by whole chunks after its first
        self._head_size = 0  # its request line and headers as parsed
        self._begun = 0  # messages begun on this connection

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A connection the :class:`_Acceptor` took (one over the cap never gets a protocol)."""
        self._transport = t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        connections = self._connections
        t.set_write_buffer_limits(WRITE_BUFFER_HIGH)  # pause_writing above it, resume_writing at 1/4
        self._parser = httptools.HttpRequestParser(self)
        if self.opening:  # counted in ``open`` from now on, not twice until the accept task ends
            self.opening = False
            connections.opening -= 1
        connections.open.add(self)
        connections.last_change = self._loop.time()
        self._draining = connections.draining

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: the request being answered is cancelled (nobody can read its
        answer; a router's upstream work for it stops), the queued ones are dropped."""
        self._parser = None
        self._connections.open.discard(self)
        self._connections.last_change = self._loop.time()
        self._closing = True
        self._queue.clear()
        if self._answering:
            in_flight, self._in_flight = self._in_flight, None
            if in_flight is not None:
                in_flight.cancel()
            elif self._worker is not None:
                self._worker.cancel()
        self._wake()

    def pause_writing(self) -> None:
        """The answers not yet sent are over :data:`WRITE_BUFFER_HIGH`: answer no more requests and
        read no more until the client reads them (:meth:`resume_writing`); closed if that takes
        long with no progress (:meth:`sweep`)."""
        self._write_paused = True
        self._write_stuck_since = self._loop.time()
        transport = self._transport
        if transport is not None:
            self._unsent_seen = transport.get_write_buffer_size()
        if not self._paused and transport is not None and not transport.is_closing():
            self._paused = True
            transport.pause_reading()

    def resume_writing(self) -> None:
        """The client read the answers down: go on answering, and reading unless too many requests
        are still queued."""
        self._write_paused = False
        self._write_stuck_since = None
        transport = self._transport
        if (
            self._paused
            and len(self._queue) <= _MAX_PIPELINED // 2
            and transport is not None
            and not transport.is_closing()
        ):
            self._paused = False
            transport.resume_reading()
        self._wake()

    def eof_received(self) -> bool:
        """The client shut its sending side.  A socket shows a client that closed the connection
        and one that only shut its sending side (a half-close) alike, so the requests tell them
        apart:

        * after a request that said it is the connection's last (``Connection: close``, or
          HTTP/1.0 without keep-alive), a half-close is how such a client says it is done
          (``nc -N``, HTTP/1.0 tools): answer what it has sent, then close (True keeps the
          transport open for those answers; the connection then closes as a draining one does);
        * after a keep-alive request, or in the middle of one, the client is gone: close now
          (False), which cancels the request in flight (:meth:`connection_lost`), as nginx (499)
          and Go's servers do.
        """
        if self._in_message or self._last_keep_alive or self._refused:
            return False
        self._draining = True
        return self._answering or bool(self._queue)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._parser is None:
            return
        self._last_read = self._loop.time()
        begun, in_head = self._begun, self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as err:
            if not self._refused:
                self._refuse(400, f"malformed HTTP request: {err}")
            return
        if self._in_head and not self._refused:
            if in_head and begun == self._begun:  # the whole chunk belongs to the same head
                self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
        elif self._continue_due:
            self._send_continue()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._begun += 1
        self._in_message = True
        self._in_head = True
        self._head_started = self._loop.time()
        self._continue_due = False
        self._head_bytes = 0
        self._head_size = 0
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size > MAX_HEAD_BYTES:  # a head that came in one or two chunks (more: data_received)
            self._refuse_head()
            return
        self._body_started = self._last_read
        self._limit = limit = self._max_body()
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._refuse(413, f"request body of {int(length)} bytes is over the limit of {limit} bytes")
            return  # the final answer instead of 100 Continue
        expect = self._headers.get(b"expect")
        if expect is not None and expect.strip().lower() == b"100-continue":
            parser = self._parser
            assert parser is not None  # httptools calls back from feed_data only
            if parser.get_http_version() != "1.0":  # RFC 9110 10.1.1: ignored in HTTP/1.0
                # the client waits for it before it sends the body (curl: a second, for bodies
                # over 1 MiB): written once this chunk is parsed, unless the body came with it,
                # or after the responses still owed before this request
                self._continue_due = True

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(body)
        if self._body_size > self._limit:
            self._refuse(413, f"request body is over the limit of {self._limit} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._continue_due = False  # the body is here: the client did not wait for it
        if self._refused:
            return
        path, _, query = self._url.partition(b"?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        parser = self._parser
        assert parser is not None  # httptools calls back from feed_data only
        request = Request(parser.get_method(), path, query, self._headers, body)
        self._last_keep_alive = keep_alive = parser.should_keep_alive()
        queue = self._queue
        if self._now is not None and not self._answering and not queue and not self._write_paused:
            self._answering = True
            self._keep_alive_now = keep_alive
            try:
                in_flight = self._now(request, self._respond_now)
            except Exception:
                logger.exception("handler failed for %s %s", request.method, request.path)
                self._respond_now(error_response(500, "internal router error; see the router log"))
                return
            if in_flight is not None:
                if self._answering:  # not answered at once
                    self._in_flight = in_flight
                return
            self._answering = False
        queue.append((request, keep_alive))
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())
        elif not self._answering:
            self._wake()
        if len(queue) > _MAX_PIPELINED and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    # own
    def drain(self) -> None:
        """Answer the requests already received, then close; close now when there are none."""
        self._draining = True
        transport = self._transport
        if not self._answering and not self._queue and transport is not None:
            transport.close()

    def _keep_open(self, keep_alive: bool) -> bool:
        """Whether the connection stays open after this response: while draining, only for
        requests already pipelined behind it."""
        return keep_alive and (not self._draining or bool(self._queue))

    def sweep(self, now: float, limits: _Connections) -> None:
        """Close a connection whose unsent answers made no progress for the write timeout (its
        write buffer over the high-water mark, or closing with answers unsent, and not shrunk since
        the last look: a client that keeps reading, however slowly, is not cut off); 408 for a
        request its client stopped sending for the read timeout, whose head is not complete the head timeout
        after it began, or whose body is not complete the body timeout after its head (none of
        them while this side paused reading); close a keep-alive connection that has had nothing
        to do for the idle timeout since its last response (or since it opened)."""
        transport = self._transport
        if transport is None:
            return
        stuck = self._write_stuck_since
        if stuck is None:
            if transport.is_closing():  # close() waits for the buffer to be sent
                self._write_stuck_since = stuck = now
                self._unsent_seen = transport.get_write_buffer_size()
        else:
            unsent = transport.get_write_buffer_size()
            if unsent < self._unsent_seen:  # the client read some since the last look: not stuck
                self._write_stuck_since = stuck = now
            self._unsent_seen = unsent
        if stuck is not None and now - stuck > limits.write_timeout_s:
            logger.debug("closing a client connection whose answers made no progress for %gs", now - stuck)
            transport.abort()
            return
        if self._refused or self._paused:
            return
        if self._in_message:
            if now - self._last_read > limits.read_timeout_s:
                self._refuse(
                    408,
                    f"the client sent nothing for {limits.read_timeout_s:g}s in the middle of its request",
                )
            elif self._in_head:
                if now - self._head_started > limits.head_timeout_s:
                    self._refuse(408, f"the request line and headers took over {limits.head_timeout_s:g}s")
            elif now - self._body_started > limits.body_timeout_s:
                self._refuse(408, f"the request body took over {limits.body_timeout_s:g}s")
        elif (
            not self._answering
            and not self._queue
            and now - max(self._last_read, self._last_write) > limits.idle_timeout_s
        ):
            transport.close()  # between requests: nothing to answer, the client reconnects

    def _send_continue(self) -> None:
        """``100 Continue`` for the message being read, once every response before it is out (an
        interim response written earlier would read as one to an earlier request)."""
        transport = self._transport
        if not self._continue_due or self._answering or self._queue or transport is None:
            return
        self._continue_due = False
        if not self._refused and not transport.is_closing():
            transport.write(_CONTINUE)
            self._body_started = self._loop.time()  # the client sends its body from now on

    def _refuse_head(self) -> None:
        self._refuse(431, f"request line and headers are over the limit of {MAX_HEAD_BYTES} bytes")

    def _refuse(self, status: int, message: str) -> None:
        """Answer at once and end the connection: the rest of the stream cannot be trusted.

        A lingering close: the write side is shut after the answer and what the client still
        sends (the rest of an oversized body) is read and dropped for up to
        ``_LINGER_SECONDS``, so the client reads the answer instead of a connection reset.
        """
        self._refused = True
        self._queue.clear()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode_response(error_response(status, message), keep_alive=False))
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _respond_now(self, response: Response) -> None:
        """Write the response of the request taken on the spot; then go on with any queued."""
        self._answering = False
        self._in_flight = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = self._keep_open(self._keep_alive_now)
        transport.write(encode_response(response, keep_alive))
        self._last_write = self._loop.time()
        if not keep_alive:
            transport.close()
            return
        if self._queue:
            if self._worker is None:
                self._worker = self._loop.create_task(self._work())
            else:
                self._wake()
        elif self._continue_due:
            self._send_continue()

    def _wake(self) -> None:
        """Let the worker go on when it waits for the next request."""
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _work(self) -> None:
        queue = self._queue
        try:
            while not self._closing:
                # nothing to do, a request taken on the spot, or answers the client has not read
                if not queue or self._answering or self._write_paused:
                    self._wakeup = wakeup = self._loop.create_future()
                    await wakeup
                    continue
                request, keep_alive = queue.popleft()
                self._answering = True
                try:
                    response = await self._handler(request)
                except Exception:
                    logger.exception("handler failed for %s %s", request.method, request.path)
                    response = error_response(500, "internal router error; see the router log")
                self._answering = False
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                keep_alive = self._keep_open(keep_alive)
                transport.write(encode_response(response, keep_alive))
                self._last_write = self._loop.time()
                if not keep_alive:
                    transport.close()
                    return
                if self._continue_due and not queue:
                    self._send_continue()
                if self._paused and len(queue) <= _MAX_PIPELINED // 2 and not self._write_paused:
                    self._paused = False
                    transport.resume_reading()
        finally:
            self._worker = None
            self._wakeup = None


def _reserve_fd() -> int | None:
    """A file descriptor held in reserve, freed to answer connections when the process has none."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _discard_received(sock: socket.socket) -> bool:
    """Read and drop what the client has sent so far (at most 1 MiB at a time); whether it has
    closed its side, or the connection is gone."""
    for _ in range(16):
        try:
            if not sock.recv(65536):
                return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
    return False


def _files_limit() -> str:
    """The process's open-files limit (its soft RLIMIT_NOFILE), for a message."""
    soft = soft_limit()
    return "unlimited" if soft is None else str(soft)


# accept() errors the next accept() does not repeat (accept(2): errors of the pending connection)
_RETRY_AT_ONCE = frozenset(
    {
        errno.ECONNABORTED, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET,
        errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.EPERM,
    }
)  # fmt: skip


class _Acceptor:
    """Accepts the listening sockets' connections itself (not the loop's server), so that each one
    gets an answer:

    * under the cap (:meth:`_Connections.full`), a transport and an :class:`_HttpProtocol`; it
      counts against the cap from its accept on;
    * over the cap, 503 on the spot, with no transport and no protocol: the answer is written, the
      sending side shut after it, what the client has sent read and dropped (a socket closed with
      unread data sends a reset instead of the end, and the client may then lose the answer) and
      the socket closed once the client closes, or after ``_LINGER_SECONDS``
      (:data:`MAX_LINGERING_REFUSALS` at most; the others at once).  The loop's own server made a
      transport and a protocol for it first, and answered in a later turn of the loop, so a burst
      of connections (a router stalled a moment finds hundreds waiting) held a descriptor each
      until then, and reset every client whose request had arrived;
    * with the process out of file descriptors (``accept()`` fails with EMFILE), 503 naming the
      open-files limit: a descriptor kept in reserve is freed, the waiting connections are taken
      and answered one at a time, and the reserve is taken back.  The loop's own server closed
      them unanswered (uvloop: libuv's reserve does the same, with no answer) or stopped
      accepting for a second (asyncio's loop).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[socket.socket],
        connections: _Connections,
        protocol_factory: Callable[[], _HttpProtocol],
    ) -> None:
        self._loop = loop
        self.listeners = listeners
        self._connections = connections
        self._factory = protocol_factory
        self._reserve = _reserve_fd()
        self._lingering: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        self._cap_answer = (0, b"")  # the cap and its 503, made again when the cap changes
        self._out_of_files_logged: float | None = None
        self._out_of_files_answered = 0  # since the last log line
        self._closed = False

    def start(self) -> None:
        for listener in self.listeners:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (and the refusals still lingering)."""
        if self._closed:
            return
        self._closed = True
        for listener in self.listeners:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        for fd in list(self._lingering):
            self._end_linger(fd)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _accept(self, listener: socket.socket) -> None:
        connections = self._connections
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _RETRY_AT_ONCE:
                    continue
                if err.errno in _OUT_OF_FILES:
                    self._out_of_files(listener, err)
                else:
                    logger.error(
                        "accepting a connection failed (%s): trying again in %gs", err, _ACCEPT_PAUSE_S
                    )
                    self._pause(listener)
                return
            if connections.full():
                self._refuse(sock, self._over_cap_answer(), "max_connections", linger=True)
            else:
                self._open(sock)

    def _open(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        protocol = self._factory()
        protocol.opening = True
        self._connections.opening += 1
        connecting = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol, sock))
        connecting.add_done_callback(lambda task: self._connected(task, protocol, sock))

    def _connected(self, task: asyncio.Task[object], protocol: _HttpProtocol, sock: socket.socket) -> None:
        """The transport of an accepted connection is made, or the client was gone already or the
        loop is closing. The connection counts in ``opening`` until its ``connection_made`` (which
        may run, and answer a request, before this task's end: counted until here, a connection
        opened meanwhile found it counted twice and the cap one lower), or until here when it never
        runs. (A task per connection costs no more than driving the coroutine by hand: 88-94
        against 90-100 us of CPU per short connection.)"""
        if protocol.opening:
            protocol.opening = False
            self._connections.opening -= 1
        if task.cancelled() or task.exception() is not None:
            logger.debug(
                "dropping an accepted connection: %s", "cancelled" if task.cancelled() else task.exception()
            )
            sock.close()

    def _over_cap_answer(self) -> bytes:
        cap = self._connections.max_connections
        if self._cap_answer[0] != cap:
            message = f"the router serves at most {cap} connections at once; retry"
            self._cap_answer = (cap, encode_response(error_response(503, message), keep_alive=False))
        return self._cap_answer[1]

    def _refuse(self, sock: socket.socket, answer: bytes, reason: str, linger: bool) -> None:
        """Answer ``answer`` and close (see the class)."""
        refused = self._connections.refused
        refused[reason] = refused.get(reason, 0) + 1
        try:
            sock.setblocking(False)
            sock.send(answer)  # a new connection's empty send buffer takes it whole
            sock.shutdown(socket.SHUT_WR)
            ended = _discard_received(sock)
        except OSError:  # the client is gone already
            ended = True
        if ended or not linger or self._closed or len(self._lingering) >= MAX_LINGERING_REFUSALS:
            sock.close()
            return
        fd = sock.fileno()
        self._loop.add_reader(fd, self._linger_read, fd)
        self._lingering[fd] = (sock, self._loop.call_later(_LINGER_SECONDS, self._end_linger, fd))

    def _linger_read(self, fd: int) -> None:
        entry = self._lingering.get(fd)
        if entry is not None and _discard_received(entry[0]):
            self._end_linger(fd)

    def _end_linger(self, fd: int) -> None:
        entry = self._lingering.pop(fd, None)
        if entry is not None:
            sock, timer = entry
            timer.cancel()
            self._loop.remove_reader(fd)
            sock.close()

    def _out_of_files(self, listener: socket.socket, err: OSError) -> None:
        """Answer the waiting connections 503 with the reserve descriptor, one at a time; without
        one (it could not be taken back), stop accepting a moment (the waiting connections stay
        in the listen queue)."""
        answered = 0
        reserve, self._reserve = self._reserve, None
        if reserve is not None:
            os.close(reserve)
            limit = _files_limit()
            message = (
                f"the router is out of file descriptors (open-files limit {limit}) and cannot serve "
                "another connection now; retry"
            )
            answer = encode_response(error_response(503, message), keep_alive=False)
            for _ in range(_ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except OSError:  # none waits any more, or the descriptor went elsewhere
                    break
                self._refuse(sock, answer, "out_of_files", linger=False)
                answered += 1
            self._reserve = _reserve_fd()
        self._log_out_of_files(err, answered)
        if self._reserve is None:
            self._pause(listener)

    def _log_out_of_files(self, err: OSError, answered: int) -> None:
        self._out_of_files_answered += answered
        now = self._loop.time()
        if self._out_of_files_logged is not None and now - self._out_of_files_logged < _OUT_OF_FILES_LOG_S:
            return
        self._out_of_files_logged = now
        logger.warning(
            "out of file descriptors accepting client connections (%s; open-files limit %s, %d client "
            "connections open): %d connection(s) answered 503 since the last report; raise the limit "
            "(ulimit -n, or the container runtime's nofile setting) or lower --max-connections",
            err.strerror or err, _files_limit(), len(self._connections.open) + self._connections.opening,
            self._out_of_files_answered,
        )  # fmt: skip
        self._out_of_files_answered = 0

    def _pause(self, listener: socket.socket) -> None:
        """Stop accepting on ``listener`` for ``_ACCEPT_PAUSE_S`` (its readiness would only repeat
        the error)."""
        self._loop.remove_reader(listener.fileno())
        self._loop.call_later(_ACCEPT_PAUSE_S, self._resume, listener)

    def _resume(self, listener: socket.socket) -> None:
        if self._closed:
            return
        if self._reserve is None:
            self._reserve = _reserve_fd()
        self._loop.add_reader(listener.fileno(), self._accept, listener)


async def _listen(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int, backlog: int
) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to (all interfaces for None or "")
    with ``SO_REUSEADDR``, as the loop's ``create_server`` binds them: an address whose family the
    kernel cannot make sockets for (IPv6 on a node booted with ``ipv6.disable=1``, where
    ``localhost`` or all interfaces also resolve to ``::``) is skipped, as there."""
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    unsupported: list[str] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as err:
                unsupported.append(f"{address[0]}: {err.strerror or err}")
                continue
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                raise OSError(
                    err.errno, f"error while attempting to bind on address {address!r}: {err.strerror}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    if not listeners:
        raise OSError(
            f"no address of {host!r} can be listened on ({'; '.join(unsupported) or 'none resolved'})"
        )
    if unsupported:
        logger.info("not listening on %s", "; ".join(unsupported))
    return listeners


@dataclass
class HttpServer:
    """A listening socket and the connections it accepted."""

    _acceptor: _Acceptor
    _connections: _Connections
    _sweeper: asyncio.Task[None]

    @property
    def port(self) -> int:
        return int(self._acceptor.listeners[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections.open)

    @property
    def max_connections(self) -> int:
        """The connection cap: one more connection is answered 503."""
        return self._connections.max_connections

    def refused_connections(self) -> dict[str, int]:
        """Connections answered 503 at once, by reason: ``max_connections`` (over the cap) and
        ``out_of_files`` (the process had no file descriptor for them)."""
        return dict(self._connections.refused)

    def close(self) -> None:
        """Stop listening (open connections stay until their clients or the loop end them)."""
        self._acceptor.close()
        self._sweeper.cancel()

    async def drain(self, limit_s: float, quiet_s: float = 1.0) -> int:
        """Shut down without dropping a request: every connection answers what it has already
        received and then closes (idle ones at once; a response goes out with ``connection:
        close``). New connections are still accepted and answered once each, so clients whose
        routing has not yet heard of the shutdown (a Service's endpoints take a moment) are
        served rather than refused. Returns once no connection is open and none has opened or
        closed for ``quiet_s`` seconds (so it listens at least that long), or after ``limit_s``;
        then stops listening. The result is the number of connections still open then."""
        loop = asyncio.get_running_loop()
        connections = self._connections
        connections.draining = True
        connections.last_change = loop.time()
        for conn in list(connections.open):
            conn.drain()
        deadline = loop.time() + limit_s
        while loop.time() < deadline:
            idle = not connections.open and not connections.opening
            if idle and loop.time() - connections.last_change >= quiet_s:
                break
            await asyncio.sleep(0.05)
        self.close()
        return len(connections.open)


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    max_body: Callable[[], int],
    backlog: int = 1024,
    now: NowHandler | None = None,
    read_timeout_s: float = READ_TIMEOUT_S,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    write_timeout_s: float = WRITE_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> HttpServer:
    """Listen on ``host:port`` (port 0 picks one) and serve ``handler`` (and ``now``, see
    :data:`NowHandler`); the timeouts are those of :data:`READ_TIMEOUT_S`, :data:`HEAD_TIMEOUT_S`,
    :data:`IDLE_TIMEOUT_S`, :data:`BODY_TIMEOUT_S` and :data:`WRITE_TIMEOUT_S`, and at most
    ``max_connections`` client connections are open at once (:data:`MAX_CONNECTIONS`; one more, or
    one the process has no file descriptor for, is answered 503 at once: see :class:`_Acceptor`)."""
    loop = asyncio.get_running_loop()
    connections = _Connections(
        loop, read_timeout_s, head_timeout_s, idle_timeout_s, body_timeout_s, write_timeout_s, max_connections
    )
    listeners = await _listen(loop, host, port, backlog)
    acceptor = _Acceptor(
        loop, listeners, connections, lambda: _HttpProtocol(handler, max_body, loop, connections, now)
    )
    acceptor.start()
    return HttpServer(acceptor, connections, loop.create_task(connections.sweep(loop)))
