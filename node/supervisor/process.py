"""The front process's handle on one worker process.

A worker is started with `spawn` semantics (a fresh `python -m node.worker`, see
:func:`spawn_process`; tests launch the same loop in a thread), talks over two socketpairs
(:mod:`node.supervisor.channel`, :mod:`node.worker.protocol`) and is watched by its exit
status: whatever kills it (SIGKILL, a segfault, `os._exit` in user code), the request it
was running fails with :class:`~node.errors.WorkerCrashed` and the pool is told through
`on_exit`. When the front kills a worker it says why with a :class:`KillReason`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from node import errors
from node.supervisor.channel import Channel
from node.worker import protocol as p
from node.worker.spec import WorkerSpec

log = logging.getLogger("node.supervisor")
_ids = itertools.count(1)
# What a worker's error kind becomes in the front (anything else is an InternalError).
# Only internal errors carry their detail (a traceback of ours) to the caller; a user's
# traceback went to the node's log (the worker's stderr).
_ERRORS: dict[str, type[errors.ApiNodeError]] = {
    p.ERR_BAD_REQUEST: errors.BadRequest,
    p.ERR_USER: errors.UserCodeError,
    p.ERR_SQL: errors.SqlError,
    p.ERR_SQL_VALUE: errors.SqlBadValue,
    p.ERR_UNAVAILABLE: errors.DatabaseUnavailable,
}


class KillReason(enum.Enum):
    """Why the front killed a worker (the pool tells a run timeout from a crash by it)."""

    HUNG = "hung"  # stopped answering pings
    RUN_TIMEOUT = "run_timeout"  # a request ran past max_run_ms
    LOAD_TIMEOUT = "load_timeout"  # did not load its endpoint within start_timeout_ms
    LOAD_FAILED = "load_failed"  # answered init with an error but did not exit
    STOP_TIMEOUT = "stop_timeout"  # did not exit after its data channel closed
    CHANNEL_CLOSED = "channel_closed"  # closed its data channel without exiting
    BAD_FRAME = "bad_frame"  # sent a frame over the limit: the channel is unusable


class SpawnFailed(Exception):
    """The worker process could not be started at all (no socketpair, no exec: typically
    file descriptors or memory exhausted). Nothing was started, so no exit will follow."""


class ChannelClosed(Exception):
    """A request could not be sent: the worker's data channel is closed (it is exiting)."""


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    nice: int = 0
    load_nice: int = 0  # added to `nice` while it loads (see node.worker)
    max_frame: int = p.MAX_FRAME


class ProcessHandle(Protocol):
    """What the front needs of a started worker (an asyncio subprocess is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts a worker on the child ends of its two socketpairs, which it takes over."""

    async def __call__(self, data: socket.socket, ctl: socket.socket, args: WorkerArgs) -> ProcessHandle: ...


async def spawn_process(data: socket.socket, ctl: socket.socket, args: WorkerArgs) -> ProcessHandle:
    """`python -m node.worker` with the two sockets passed down, one ONNX thread."""
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node.worker",
            str(data.fileno()),
            str(ctl.fileno()),
            str(args.nice),
            str(args.load_nice),
            str(args.max_frame),
            pass_fds=(data.fileno(), ctl.fileno()),
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
        )
    finally:
        data.close()
        ctl.close()


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
        args: WorkerArgs = WorkerArgs(),
        on_lost: Callable[[WorkerProcess], None] | None = None,
        launch: Launcher = spawn_process,
    ) -> None:
        self.id = next(_ids)
        self.args = args
        self.on_lost = on_lost
        self.label = f"{label} worker {self.id}"
        self.spec = spec
        self.on_exit = on_exit
        self._launch = launch
        self.proc: ProcessHandle | None = None
        self.pid: int | None = None
        self.state = "starting"  # starting | idle | busy | lost | dead
        self.started_at = time.monotonic()
        self.idle_since = time.monotonic()
        self.tasks_done = 0
        self.exit_code: int | None = None
        self.kill_reason: KillReason | None = None  # why we killed it, when we did
        self.kill_detail = ""  # the same, in words, for callers and the log
        self.retiring = False  # stopped on purpose (shrink, reclaim, shutdown): not a crash
        self.lost = False  # its data channel closed while it was not retiring
        self.epoch = 0  # its pool's crash count when it was started
        self.ping_sent_at: float | None = None
        self._inflight: dict[int, asyncio.Future[p.Result]] = {}
        self._data: Channel | None = None
        self._ctl: Channel | None = None
        self._exited = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.state != "dead"

    @property
    def exit_text(self) -> str:
        return describe_exit(self.exit_code)

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
            loaded = await asyncio.wait_for(self.request(p.OP_INIT, self.spec), timeout)
        except ChannelClosed:  # it died at once; its exit is reported by _watch
            raise errors.WorkerCrashed(f"worker {self.label} exited before loading") from None
        except TimeoutError:
            self.kill(KillReason.LOAD_TIMEOUT, "did not finish loading in time")
            raise errors.NotReady(f"worker {self.label} did not load within {timeout:.0f} s") from None
        self.state = "idle"
        self.idle_since = time.monotonic()
        return loaded.payload  # type: ignore[no-any-return]

    async def _spawn(self) -> None:
        """The process and its two channels, or an exception with nothing left behind."""
        loop = asyncio.get_running_loop()
        socks: list[socket.socket] = []
        try:
            socks += socket.socketpair()
            socks += socket.socketpair()
            data_front, data_child, ctl_front, ctl_child = socks
            socks = [data_front, ctl_front]  # the launcher owns the child ends (it closes them)
            self.proc = await self._launch(data_child, ctl_child, self.args)
            self.pid = self.proc.pid
            mf = self.args.max_frame
            _, self._data = await loop.create_connection(
                lambda: Channel(self._on_data, max_frame=mf, on_lost=self._on_data_lost, on_bad_frame=self._on_bad),
                sock=data_front,
            )
            _, self._ctl = await loop.create_connection(
                lambda: Channel(self._on_ctl, max_frame=mf, on_bad_frame=self._on_bad), sock=ctl_front
            )
        except BaseException:
            for ch in (self._data, self._ctl):
                if ch is not None:
                    ch.close()
            for sock in socks:
                sock.close()
            if self.proc is not None and self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            raise

    def _on_data_lost(self) -> None:
        if self.on_lost is not None and self.state != "dead":
            self.on_lost(self)

    def _on_bad(self, exc: p.FrameTooLarge) -> None:
        self.kill(KillReason.BAD_FRAME, f"sent a frame of {exc}")

    def request(self, op: str, payload: Any) -> asyncio.Future[p.Result]:
        """Sends one message; the future resolves to the worker's Result or fails. Raises,
        having sent nothing, ChannelClosed when the worker can take no request and
        FrameTooLarge when the message would not fit in one frame."""
        if not self.sendable:
            raise ChannelClosed(self.label)
        assert self._data is not None
        mid = next(_ids)
        try:
            self._data.send(p.Request(mid, op, payload))
        except (RuntimeError, OSError):  # uvloop: "the handler is closed"
            raise ChannelClosed(self.label) from None
        fut: asyncio.Future[p.Result] = asyncio.get_running_loop().create_future()
        self._inflight[mid] = fut
        return fut

    def _on_data(self, msg: p.Message) -> None:
        fut = self._inflight.pop(msg.id, None) if isinstance(msg, p.Result | p.Error) else None
        if fut is None or fut.done():
            return
        if isinstance(msg, p.Result):
            fut.set_result(msg)
            return
        assert isinstance(msg, p.Error)
        cls = _ERRORS.get(msg.kind)
        fut.set_exception(cls(msg.message) if cls is not None else errors.InternalError(msg.message, detail=msg.detail))

    def _on_ctl(self, msg: p.Message) -> None:
        if isinstance(msg, p.Pong):
            self.ping_sent_at = None

    def ping(self) -> None:
        if self._ctl is not None and self._ctl.open and self.ping_sent_at is None and self.state != "dead":
            self.ping_sent_at = time.monotonic()
            self._ctl.send(p.Ping(self.ping_sent_at))

    def _crash_error(self) -> errors.ApiNodeError:
        if self.kill_reason is not None:
            return errors.WorkerCrashed(f"worker {self.label} was killed: {self.kill_detail}")
        return errors.WorkerCrashed(
            f"worker {self.label} (pid {self.pid}) crashed ({self.exit_text}) while running this request"
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
        for ch in (self._data, self._ctl):
            if ch is not None:
                ch.close()
        self._exited.set()
        self.on_exit(self)

    def kill(self, reason: KillReason, detail: str) -> None:
        """SIGKILL: for hung, over-time or broken workers. In-flight requests fail with
        `detail`; the first reason given is the one kept."""
        if self.kill_reason is None:
            self.kill_reason, self.kill_detail = reason, detail
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 5.0) -> None:
        """Graceful: closes the data channel (the worker exits after its current request)."""
        if self.proc is None:
            return
        if self._data is not None:
            self._data.close()
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            self.kill(KillReason.STOP_TIMEOUT, "did not stop in time")
            await self._exited.wait()

    async def wait_exited(self) -> None:
        await self._exited.wait()
