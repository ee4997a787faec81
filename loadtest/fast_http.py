"""The fast JSON HTTP transport: raw asyncio connections, requests pre-framed as bytes.

aiohttp's client spends some 300 µs of Python per request (request and response objects,
header multidicts, a timer context), so one generator core tops out near 2,500 req/s:
less than a node on the other core serves. Here each body becomes its whole HTTP/1.1
request (request line, headers, body) once, up front, and a call is one ``write`` and
one future. :class:`_Connection` (an :class:`asyncio.Protocol`) reads only what a load
test needs from the answer: the status line, ``Content-Length`` (or chunked framing, or
read-to-close), ``Connection: close``; the body is consumed and discarded.

Connections are kept alive and pooled: a call takes an idle one (or opens one, up to
``connections``; beyond, it waits for one to free up) and puts it back after the answer.
A closed loop of N clients over N connections thus keeps each connection busy back to
back; an open loop opens connections as its in-flight count grows, as real callers would.
A connection whose answer timed out, or that the server closed, is dropped.

Error keys are the harness's: ``"http 503"``, ``"timeout"``, ``"conn <Exception>"``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from loadtest.config import Target
from loadtest.transport import error_key

_MAX_HEAD = 64 * 1024
_TO_CLOSE = -1  # no Content-Length, not chunked: the body runs to the end of the connection
_CHUNKED = -2


class ServerDisconnectedError(ConnectionError):
    """The server closed the connection before the answer was complete."""


class ProtocolError(ConnectionError):
    """An answer that is not HTTP/1.x as this client reads it."""


def frame_requests(target: Target, bodies: Sequence[Any]) -> list[bytes]:
    """Each body as its complete HTTP/1.1 request (JSON encoded with orjson)."""
    url = urlsplit(target.http_url())
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    head = f"{target.method.upper()} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
    head += "Content-Type: application/json\r\nAccept: */*\r\n"
    if target.api_key:
        token = base64.b64encode(f"{target.api_key}:".encode()).decode("ascii")
        head += f"Authorization: Basic {token}\r\n"
    out = []
    for body in bodies:
        data = orjson.dumps(body)
        out.append(f"{head}Content-Length: {len(data)}\r\n\r\n".encode("latin-1") + data)
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._waiter: asyncio.Future[int] | None = None
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._body_at = 0
        self._length = 0
        self._pos = 0  # chunked: where the next chunk-size line starts

    def send(self, request: bytes, waiter: asyncio.Future[int]) -> None:
        self._waiter = waiter
        assert self.transport is not None
        self.transport.write(request)

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._status and self._length == _TO_CLOSE:
            self._finish(self._status)
        else:
            self._fail(ServerDisconnectedError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None:
            self._fail(ProtocolError("data from the server with no request in flight"))
            return
        try:
            status = self._parse()
        except (ValueError, IndexError) as exc:
            self._fail(ProtocolError(f"cannot read the answer: {exc}"))
            return
        if status:
            self._finish(status)

    def _finish(self, status: int) -> None:
        waiter, self._waiter = self._waiter, None
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self) -> int:
        """The status once the whole answer is in the buffer (and consumed), else 0."""
        buf = self._buf
        if not self._status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("header block too large")
                return 0
            head = bytes(buf[:end]).lower()
            if not head.startswith(b"http/1."):
                raise ValueError(f"not an HTTP/1.x status line: {head[:40]!r}")
            status = int(head[9:12])
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                del buf[: end + 4]
                return self._parse()
            self._body_at = end + 4
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self._length = int(head[i + 17 : j if j >= 0 else len(head)])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._length, self._pos = _CHUNKED, self._body_at
            elif status in (204, 304):
                self._length = 0
            else:
                self._length = _TO_CLOSE
            if b"\r\nconnection: close" in head:
                self.reusable = False
            self._status = status
        if self._length >= 0:
            size = self._body_at + self._length
            if len(buf) < size:
                return 0
        elif self._length == _CHUNKED:
            size = self._chunked_end()
            if size < 0:
                return 0
        else:
            return 0  # read-to-close: connection_lost finishes it
        if len(buf) > size:  # nothing was asked for: a confused server
            self.reusable = False
        del buf[:]
        return self._status

    def _chunked_end(self) -> int:
        """Where a chunked body (and its trailers) ends, or -1 while incomplete."""
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n", self._pos)
            if eol < 0:
                return -1
            size = int(bytes(buf[self._pos : eol]).split(b";", 1)[0], 16)
            if size == 0:
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    return eol + 4
                end = buf.find(b"\r\n\r\n", eol)  # trailers
                return -1 if end < 0 else end + 4
            nxt = eol + 2 + size + 2
            if len(buf) < nxt:
                return -1
            self._pos = nxt


class FastHttpTransport:
    """Sends pre-framed requests over pooled keep-alive connections; implements Transport."""

    def __init__(self, target: Target, bodies: Sequence[Any], *, connections: int, timeout: float) -> None:
        url = urlsplit(target.http_url())
        self._host = url.hostname or "127.0.0.1"
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if url.scheme == "https" else None
        self._port = url.port or (443 if self._ssl else 80)
        self._requests = frame_requests(target, bodies)
        self._limit = connections
        self._timeout = timeout
        self._open = 0  # connections open or opening
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._all: set[_Connection] = set()
        self._loop = asyncio.get_running_loop()

    async def call(self, slot: int, index: int) -> str | None:
        loop = self._loop
        try:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = await asyncio.wait_for(self._acquire(conn), self._timeout)
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return error_key("conn", exc)
        waiter: asyncio.Future[int] = loop.create_future()
        timer = loop.call_later(self._timeout, _expire, waiter)
        try:
            conn.send(self._requests[index], waiter)
            status = await waiter
        except TimeoutError:
            conn.abort()
            return "timeout"
        except OSError as exc:
            return error_key("conn", exc)
        finally:
            timer.cancel()
            self._release(conn)
        return None if status < 400 else f"http {status}"

    async def _acquire(self, stale: _Connection | None) -> _Connection:
        if stale is not None:
            self._forget(stale)
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._forget(conn)
        if self._open >= self._limit:
            fut: asyncio.Future[_Connection | None] = self._loop.create_future()
            self._waiters.append(fut)
            try:
                handed = await fut
            except asyncio.CancelledError:
                # Timed out while waiting: a connection handed over meanwhile goes back.
                if fut.done() and not fut.cancelled():
                    self._release_handed(fut.result())
                raise
            if handed is not None:
                return handed
        self._open += 1
        try:
            _, conn = await self._loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        except BaseException:
            self._open -= 1
            self._wake(None)
            raise
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or not conn.reusable:
            if not conn.closed:
                conn.abort()
            self._forget(conn)
            self._wake(None)
        elif not self._wake(conn):
            self._idle.append(conn)

    def _release_handed(self, conn: _Connection | None) -> None:
        if conn is not None:
            self._release(conn)
        else:
            self._wake(None)

    def _forget(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1

    def _wake(self, conn: _Connection | None) -> bool:
        """Hands ``conn`` (or, with None, the right to open one) to the oldest waiter."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    async def aclose(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)


def _expire(waiter: asyncio.Future[int]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
