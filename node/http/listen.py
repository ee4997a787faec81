"""The HTTP listening sockets, accepting many connections per wake-up.

uvloop's servers accept through libuv, which since 1.45 accepts one connection per event
loop iteration (libuv/libuv#3696: "don't accept() connections in a loop", tuned for a loop
whose iterations are short). A loaded front's iterations last tens of milliseconds, so a
burst of new connections — callers opening connections past capacity, a fleet reconnecting
after a restart — waited in the kernel's accept queue with their requests for seconds,
where no queue timer and no admission policy sees them (seen: 900 connections queued, one
accepted every 20-50 ms, `/ready` answered after 8 s). :class:`Listener` watches each
listening socket itself and accepts up to `per_wakeup` connections each time it is
readable, handing each to the event loop (`connect_accepted_socket`), TLS included.

When the process is out of descriptors (EMFILE, ENFILE) or memory, accepting pauses for
0.1 s instead of spinning on a socket that stays readable, as asyncio's own loop does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable

log = logging.getLogger("node.http")
RETRY_S = 0.1  # after running out of descriptors or memory
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Listener:
    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        *,
        tls: ssl.SSLContext | None = None,
        tls_handshake_timeout: float | None = None,
        per_wakeup: int = 256,
    ) -> None:
        self.sockets = sockets
        self._factory = factory
        self._tls = tls
        self._tls_handshake_timeout = tls_handshake_timeout
        self._per_wakeup = per_wakeup
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._warned_at = 0.0
        self._pending: set[asyncio.Task[object]] = set()  # connections being set up (TLS handshakes)
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        backlog: int,
        factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None = None,
        tls_handshake_timeout: float | None = None,
    ) -> Listener:
        """Binds every address `host` resolves to (as `loop.create_server` does), on `port`
        (0: a free one, the same for all), and starts accepting."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, addr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(sockets) > 1:  # one port for every address
                    addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
                sock.bind(addr)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return cls(sockets, factory, tls=tls, tls_handshake_timeout=tls_handshake_timeout)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(self._per_wakeup):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the caller left before we took it
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                self._pause(listening, exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task: asyncio.Task[object] = self._loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._tls, ssl_handshake_timeout=self._tls_handshake_timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:  # a TLS handshake that failed
            log.debug("connection not set up: %r", exc)
            conn.close()
            return None

    def _pause(self, listening: socket.socket, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("cannot accept a connection (%s): pausing %g s; raise the descriptor limit", exc, RETRY_S)
        self._loop.remove_reader(listening.fileno())
        self._loop.call_later(RETRY_S, self._resume, listening)

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    def close(self) -> None:
        """Stops accepting: new connections are refused by the kernel. Connections already
        accepted stay."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
