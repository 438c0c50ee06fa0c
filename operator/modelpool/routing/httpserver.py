"""A small HTTP/1.1 server on asyncio protocols and ``httptools``.

It parses requests with keep-alive and pipelining (answered in order), refuses bodies over a
size limit with 413 as soon as the headers or the body show it, and hands each complete
request to an async handler.  When the client goes away, the request it waits for is cancelled
(the handler's task, or what a :data:`NowHandler` returned).  What one client can make it hold is
bounded: answers it does not read (:data:`WRITE_BUFFER_HIGH`, :data:`WRITE_TIMEOUT_S`), a request
trickled in (:data:`HEAD_TIMEOUT_S`, :data:`BODY_TIMEOUT_S`), connections (:data:`MAX_CONNECTIONS`).
No framework sits between the socket and the router, which keeps the added latency low (see
docs/router.md for the measurements).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

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
router's connections to the variants)."""
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_SECONDS = 2.0
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
        self._transport = t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        connections = self._connections
        if len(connections.open) >= connections.max_connections:
            self._refused = True  # data_received reads nothing
            message = f"the router serves at most {connections.max_connections} connections at once; retry"
            t.write(encode_response(error_response(503, message), keep_alive=False))
            t.close()
            return
        t.set_write_buffer_limits(WRITE_BUFFER_HIGH)  # pause_writing above it, resume_writing at 1/4
        self._parser = httptools.HttpRequestParser(self)
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


@dataclass
class HttpServer:
    """A listening socket and the connections it accepted."""

    server: asyncio.Server
    _connections: _Connections
    _sweeper: asyncio.Task[None]

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections.open)

    def close(self) -> None:
        """Stop listening (open connections stay until their clients or the loop end them)."""
        self.server.close()
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
            if not connections.open and loop.time() - connections.last_change >= quiet_s:
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
    ``max_connections`` client connections are open at once (:data:`MAX_CONNECTIONS`)."""
    loop = asyncio.get_running_loop()
    connections = _Connections(
        loop, read_timeout_s, head_timeout_s, idle_timeout_s, body_timeout_s, write_timeout_s, max_connections
    )
    server = await loop.create_server(
        lambda: _HttpProtocol(handler, max_body, loop, connections, now),
        host,
        port,
        backlog=backlog,
        reuse_address=True,
    )
    return HttpServer(server, connections, loop.create_task(connections.sweep(loop)))
