"""What one HTTP client may hold: a connection cap, a header-read timeout, a body-read
timeout, and a Content-Length refused before a byte of the body is read.

aiohttp has the idle keep-alive timeout (`keepalive_timeout`, also armed when a connection
opens) but no header or body deadline and no connection cap, so this module adds them:

- :class:`ConnectionGuard` is the listening socket's protocol factory. It builds aiohttp's
  own `RequestHandler` (a subclass, :class:`GuardedHandler`) and counts the connections.
  Over the cap, the connection that has waited longest for a request (idle keep-alive, or a
  head still trickling in) is closed to make room; when every connection is in a request,
  the newest is closed. An idle flood therefore never locks out `/ready` or a real client.
- :class:`GuardedHandler` closes a connection whose request head is not complete
  `header_timeout` seconds after its first byte (a raw `408`, then close).
- :func:`body_guard` is a middleware: a `Content-Length` over the body limit is answered
  413 at once, and a body that is not complete `body_timeout` seconds after its head is
  answered 408; both close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from node import errors
from node.http.app import Handler, error_response
from node.http.refuse import RawHead, RawVerdict, raw_head

log = logging.getLogger("node.http")


class ConnectionGuard:
    """Protocol factory for `loop.create_server`: aiohttp's handlers, counted and capped."""

    def __init__(
        self,
        server: Server,
        *,
        max_connections: int,
        header_timeout: float,
        refuse: Callable[[RawHead], RawVerdict] | None = None,
    ) -> None:
        self.server = server
        self.refuse = refuse  # node.http.refuse.raw_refuser: a prepared 503 for a whole request, or None
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.connections: set[GuardedHandler] = set()
        # Connections waiting for a request, longest-waiting first (dicts keep insertion order).
        self.waiting: dict[GuardedHandler, None] = {}
        self.closed_over_cap = 0
        self.refused_unparsed = 0  # requests refused from their bytes (node.http.refuse), before aiohttp
        self._warned_at = 0.0

    def __call__(self) -> GuardedHandler:
        # The same arguments aiohttp's own Server.__call__ passes (keepalive_timeout, access_log,
        # ...). Private, but aiohttp has no public way to build a RequestHandler subclass for
        # its Server; GuardedHandler reads a few RequestHandler privates for the same reason.
        kwargs: dict[str, Any] = self.server._kwargs
        return GuardedHandler(self, self.server, loop=asyncio.get_running_loop(), **kwargs)

    def status(self) -> dict[str, int]:
        """The `http` section of /admin/status."""
        return {
            "connections": len(self.connections),
            "maxConnections": self.max_connections,
            "closedOverCap": self.closed_over_cap,
            "refusedUnparsed": self.refused_unparsed,
        }

    def opened(self, handler: GuardedHandler) -> None:
        self.connections.add(handler)
        self.waiting[handler] = None
        if len(self.connections) <= self.max_connections:
            return
        victim = next(iter(self.waiting))  # the newest when it is the only one waiting
        self.forget(victim)
        victim.force_close()
        self.closed_over_cap += 1
        now = time.monotonic()
        if now - self._warned_at > 10:  # a flood would otherwise write a line per connection
            self._warned_at = now
            log.warning(
                "HTTP connection cap reached (%d, --max-connections): closing the connections that "
                "wait longest for a request (%d so far)",
                self.max_connections,
                self.closed_over_cap,
            )

    def forget(self, handler: GuardedHandler) -> None:
        self.connections.discard(handler)
        self.waiting.pop(handler, None)

    def idle(self, handler: GuardedHandler) -> None:
        # Not when its next request's head is already queued (it came in while this one ran).
        if handler in self.connections and not handler._messages:
            self.waiting[handler] = None

    def busy(self, handler: GuardedHandler) -> None:
        self.waiting.pop(handler, None)


_HEAD_TIMEOUT_BODY = orjson.dumps(
    {
        "errorType": "REQUEST_TIMEOUT",
        "message": "the request head did not arrive in time (--header-timeout)",
        "detailedMessage": "the request head did not arrive in time (--header-timeout)",
    }
)
_HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_HEAD_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _HEAD_TIMEOUT_BODY
)


_AT_BOUNDARY, _IN_BODY, _LOST = 0, 1, 2


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a deadline on each request head."""

    def __init__(self, guard: ConnectionGuard, manager: Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_body: StreamReader | None = None  # the body of the latest request head
        # Where the bytes fed to aiohttp's parser end, as this handler frames them: at a
        # request boundary (_AT_BOUNDARY), inside a body with `_body_left` bytes to come
        # (_IN_BODY), or unknown (_LOST: a split head, pipelining, a chunked body; for good,
        # as only aiohttp's parser knows then). Only at a boundary can a whole request in a
        # read be refused before aiohttp sees it (node.http.refuse).
        self._framing = _AT_BOUNDARY
        self._body_left = 0
        self._admitted: Callable[[], None] | None = None  # to call once the request let in is answered
        self._handled = 0  # requests aiohttp parsed whose handling ended (_handle_request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened(self)

    def _release(self) -> None:
        if self._admitted is not None:
            self._admitted()
            self._admitted = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._release()
        self._guard.forget(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._framing == _AT_BOUNDARY:
            head = raw_head(data)
            if head is not None and head.size == len(data) and self._refused(head):
                return
            self._frame(data, head)
        elif self._framing == _IN_BODY:
            self._frame(data, None)
        # Bytes are a request head unless the latest request's body is still arriving.
        in_head = self._last_body is None or self._last_body.is_eof()
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a head is complete
            self._guard.busy(self)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._last_body = self._messages[-1][1] if self._messages else None
        elif in_head and data and self._head_timer is None and not self._force_close:
            self._head_timer = self._loop.call_later(self._guard.header_timeout, self._head_timed_out, heads)

    def _frame(self, data: bytes, head: RawHead | None) -> None:
        """Follows the request boundaries in the bytes handed to aiohttp's parser."""
        if self._framing == _IN_BODY:
            if len(data) < self._body_left:
                self._body_left -= len(data)
            else:
                self._framing = _AT_BOUNDARY if len(data) == self._body_left else _LOST
                self._body_left = 0
        elif head is None or len(data) > head.size:
            self._framing = _LOST if data else _AT_BOUNDARY
        elif len(data) < head.size:
            self._framing, self._body_left = _IN_BODY, head.size - len(data)

    def _refused(self, head: RawHead) -> bool:
        """Answers a whole request at a boundary with the data plane's prepared refusal, when
        there is one and the connection is idle (no answer of an earlier request to come)."""
        refuse = self._guard.refuse
        if (
            refuse is None
            # Every request aiohttp parsed on this connection has been answered (its answer
            # written, or the connection is closing): none is queued, in a handler, or popped
            # from the queue with its task not yet started; a prepared answer comes in order.
            or self._handled != self._request_count
            or self._force_close
            or self._close
            or self._upgraded
            or self.transport is None
            # A client that sends without reading: aiohttp's path waits for the socket to
            # drain and stops reading, where a prepared answer would only pile up in memory.
            or self.writing_paused
        ):
            return False
        answer = refuse(head)
        if not isinstance(answer, bytes):
            if answer is not None:  # let in: counted until it is answered (_handle_request)
                self._release()
                self._admitted = answer
            return False
        self.transport.write(answer)
        self._guard.refused_unparsed += 1
        # As aiohttp does after an answer: the keep-alive timer counts from now.
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        self._guard.busy(self)
        self._guard.idle(self)  # the latest to have sent a request: the last one evicted
        return True

    def _head_timed_out(self, heads: int) -> None:
        self._head_timer = None
        if self._request_count != heads or self._force_close:
            return
        if self._request_in_progress:  # pipelined behind a running request: judge it when that ends
            self._head_timer = self._loop.call_later(self._guard.header_timeout, self._head_timed_out, heads)
            return
        if self.transport is not None:
            self.transport.write(_HEAD_TIMEOUT)
        self._guard.forget(self)
        self.force_close()  # closes once the 408 is written

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._handled += 1
            self._release()
            if not self._force_close:
                self._guard.idle(self)


def body_guard(max_body: int, body_timeout: float) -> Any:
    """Middleware: refuses an announced body over `max_body` before reading it, and reads
    every body within `body_timeout` (handlers then read it from aiohttp's cache)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            length = request.content_length
            if length is not None and length > max_body:
                return _closing(
                    errors.PayloadTooLarge(
                        f"the request body is over this node's limit of {max_body} bytes (--max-body-mb): "
                        f"it announces {length} bytes"
                    )
                )
            try:
                if request.content.is_eof():  # all there already (a small body): nothing to wait for
                    await request.read()
                else:
                    async with asyncio.timeout(body_timeout):
                        await request.read()
            except TimeoutError:
                return _closing(
                    errors.RequestTimeout(
                        f"the request body did not arrive within {body_timeout:g} s of its head (--body-timeout)"
                    )
                )
        return await handler(request)

    return guard


def _closing(exc: errors.ApiNodeError) -> web.Response:
    response = error_response(exc)
    response.force_close()  # the rest of the body is never read: this connection is done
    return response
