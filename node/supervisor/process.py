"""The front process's handle on one worker process.

A worker is started with `spawn` semantics (a fresh `python -m node.worker`), talks over two
socketpairs (see :mod:`node.worker.protocol`) and is watched by its exit status: whatever
kills it (SIGKILL, a segfault, `os._exit` in user code), the request it was running fails
with :class:`~node.errors.WorkerCrashed` and the pool is told through `on_exit`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from node import errors
from node.worker import protocol as p
from node.worker.spec import WorkerSpec

log = logging.getLogger("node.supervisor")
_ids = itertools.count(1)
_SQL_ERRORS: dict[str, type[errors.ApiNodeError]] = {
    p.ERR_SQL: errors.SqlError,
    p.ERR_SQL_VALUE: errors.SqlBadValue,
    p.ERR_UNAVAILABLE: errors.DatabaseUnavailable,
}


class SpawnFailed(Exception):
    """The worker process could not be started at all (no socketpair, no exec: typically
    file descriptors or memory exhausted). Nothing was started, so no exit will follow."""


class ChannelClosed(Exception):
    """A request could not be sent: the worker's data channel is closed (it is exiting)."""


class _FrameProtocol(asyncio.Protocol):
    """Splits a byte stream into frames and hands each decoded message to `on_message`."""

    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[], None] | None = None) -> None:
        self._buf = bytearray()
        self._on_message = on_message
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost()

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        hs = p.HEADER.size
        while len(buf) >= hs:
            (size,) = p.HEADER.unpack_from(buf)
            if len(buf) < hs + size:
                break
            msg = p.decode(bytes(buf[hs : hs + size]))
            del buf[: hs + size]
            self._on_message(msg)

    def send(self, msg: Any) -> None:
        assert self.transport is not None
        self.transport.write(p.encode(msg))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class WorkerProcess:
    """One worker process. Created by a pool; `start()` spawns it and loads its endpoint."""

    def __init__(
        self,
        label: str,
        spec: WorkerSpec,
        on_exit: Callable[[WorkerProcess], None],
        *,
        nice: int = 0,
        load_nice: int = 0,
        on_lost: Callable[[WorkerProcess], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.nice = nice
        self.load_nice = load_nice  # added to `nice` while it loads (see node.worker)
        self.on_lost = on_lost
        self.label = f"{label} worker {self.id}"
        self.spec = spec
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.state = "starting"  # starting | idle | busy | dead
        self.started_at = time.monotonic()
        self.idle_since = time.monotonic()
        self.tasks_done = 0
        self.exit_code: int | None = None
        self.kill_reason: str | None = None  # why we killed it, when we did
        self.retiring = False  # stopped on purpose (shrink, reclaim, shutdown): not a crash
        self.lost = False  # its data channel closed while it was not retiring
        self.epoch = 0  # its pool's crash count when it was started
        self.ping_sent_at: float | None = None
        self._inflight: dict[int, asyncio.Future[Any]] = {}
        self._data: _FrameProtocol | None = None
        self._ctl: _FrameProtocol | None = None
        self._exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.state != "dead"

    @property
    def sendable(self) -> bool:
        """False once the data channel closed: the worker is exiting, send it nothing."""
        return self.state != "dead" and self._data is not None and self._data.open

    async def start(self, timeout: float) -> dict[str, Any]:
        """Spawns the process and waits for its endpoint to load. Raises SpawnFailed when no
        process could be started (then nothing else happens: no exit callback), and
        ApiNodeError when the process started but did not load (its exit follows)."""
        try:
            await self._spawn()
        except Exception as exc:
            self.state = "dead"
            raise SpawnFailed(f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)) from exc
        asyncio.create_task(self._watch(), name=f"watch-{self.label}")  # noqa: RUF006 - ends with the process
        try:
            describe, _ = await asyncio.wait_for(self.request(p.OP_INIT, self.spec), timeout)
        except ChannelClosed:  # it died at once; its exit is reported by _watch
            raise errors.WorkerCrashed(f"worker {self.label} exited before loading") from None
        except TimeoutError:
            self.kill("did not finish loading in time")
            raise errors.NotReady(f"worker {self.label} did not load within {timeout:.0f} s") from None
        self.state = "idle"
        self.idle_since = time.monotonic()
        return describe  # type: ignore[no-any-return]

    async def _spawn(self) -> None:
        """The process and its two channels, or an exception with nothing left behind."""
        loop = asyncio.get_running_loop()
        socks: list[socket.socket] = []
        try:
            socks += socket.socketpair()
            socks += socket.socketpair()
            data_front, data_child, ctl_front, ctl_child = socks
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "node.worker",
                str(data_child.fileno()),
                str(ctl_child.fileno()),
                str(self.nice),
                str(self.load_nice),
                pass_fds=(data_child.fileno(), ctl_child.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
            )
            self.pid = self.proc.pid
            data_child.close()
            ctl_child.close()
            _, self._data = await loop.create_connection(
                lambda: _FrameProtocol(self._on_data, self._on_data_lost), sock=data_front
            )
            _, self._ctl = await loop.create_connection(lambda: _FrameProtocol(self._on_ctl), sock=ctl_front)
        except BaseException:
            for proto in (self._data, self._ctl):
                if proto is not None and proto.transport is not None:
                    proto.transport.close()
            for sock in socks:
                sock.close()
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            raise

    def _on_data_lost(self) -> None:
        if self.on_lost is not None and self.state != "dead":
            self.on_lost(self)

    def request(self, op: str, payload: Any) -> asyncio.Future[Any]:
        """Sends one message; the future resolves to `(result, compute_us)` or fails.
        Raises ChannelClosed, having sent nothing, when the worker can take no request."""
        if not self.sendable:
            raise ChannelClosed(self.label)
        assert self._data is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        mid = next(_ids)
        try:
            self._data.send((mid, op, payload))
        except (RuntimeError, OSError):  # uvloop: "the handler is closed"
            raise ChannelClosed(self.label) from None
        self._inflight[mid] = fut
        return fut

    def _on_data(self, msg: Any) -> None:
        mid, ok, payload = msg
        fut = self._inflight.pop(mid, None)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(payload)
            return
        kind, message, detail = payload
        if kind == p.ERR_BAD_REQUEST:
            fut.set_exception(errors.BadRequest(message))
        elif kind == p.ERR_USER:
            # the traceback went to the node's log (the worker's stderr), not to the caller
            fut.set_exception(errors.UserCodeError(message))
        elif kind in _SQL_ERRORS:
            fut.set_exception(_SQL_ERRORS[kind](message))
        else:
            fut.set_exception(errors.InternalError(message, detail=detail))

    def _on_ctl(self, msg: Any) -> None:
        if msg[0] == "pong":
            self.ping_sent_at = None

    def ping(self) -> None:
        if self._ctl is not None and self._ctl.open and self.ping_sent_at is None and self.state != "dead":
            self.ping_sent_at = time.monotonic()
            self._ctl.send(("ping", self.ping_sent_at))

    def _crash_error(self) -> errors.ApiNodeError:
        if self.kill_reason is not None:
            return errors.WorkerCrashed(f"worker {self.label} was killed: {self.kill_reason}")
        return errors.WorkerCrashed(
            f"worker {self.label} (pid {self.pid}) crashed ({describe_exit(self.exit_code)}) while running this request"
        )

    async def _watch(self) -> None:
        assert self.proc is not None
        self.exit_code = await self.proc.wait()
        self.state = "dead"
        err = self._crash_error()
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(err)
        self._inflight.clear()
        for proto in (self._data, self._ctl):
            if proto is not None and proto.transport is not None:
                proto.transport.close()
        self._exited.set()
        self.on_exit(self)

    def kill(self, reason: str) -> None:
        """SIGKILL: for hung or over-time workers. In-flight requests fail with `reason`."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 5.0) -> None:
        """Graceful: closes the data channel (the worker exits after its current request)."""
        if self.proc is None:
            return
        if self._data is not None and self._data.transport is not None:
            self._data.transport.close()
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            self.kill("did not stop in time")
            await self._exited.wait()

    async def wait_exited(self) -> None:
        await self._exited.wait()
