"""Workers in threads: the real worker loop (node.worker.serve) and the real protocol, on
real socketpairs, with a runtime of the test's instead of a subprocess loading an endpoint.

`ThreadLauncher(factory)` is a `node.supervisor.process.Launcher`: give it to a pool's
`PoolContext(launch=...)`. `factory(spec, worker)` builds the runtime of each worker; the
runtime can end its "process" like a crash does (`raise Die(code)`), wait on
`worker.killed` (set when the front kills it), or write raw bytes on `worker.data`.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Callable
from typing import Any

from node.supervisor.process import WorkerArgs
from node.worker.runtime import Runtime
from node.worker.serve import serve

_pids = itertools.count(900_001)


class Die(BaseException):
    """Raised by a fake runtime: its worker ends as a process exiting with `code` would."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ThreadWorker:
    """A worker "process": serve() in a thread. Satisfies process.ProcessHandle."""

    def __init__(self, data: socket.socket, ctl: socket.socket) -> None:
        self.pid = next(_pids)
        self.returncode: int | None = None
        self.data = data
        self.ctl = ctl
        self.killed = threading.Event()
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def run(self, factory: Callable[[Any, ThreadWorker], Runtime], args: WorkerArgs) -> None:
        def main() -> None:
            try:
                code = serve(self.data, self.ctl, lambda spec: factory(spec, self), max_frame=args.max_frame)
            except Die as exc:
                code = exc.code
            self._shut()  # as a process's exit closes its descriptors
            self.data.close()
            self.ctl.close()
            try:
                self._loop.call_soon_threadsafe(self._exit, code)
            except RuntimeError:  # the test is over and its loop closed: nobody is waiting
                pass

        threading.Thread(target=main, daemon=True, name=f"fake-worker-{self.pid}").start()

    def _shut(self) -> None:
        for sock in (self.data, self.ctl):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL: the channels close at once; the thread ends when its runtime returns."""
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        self.killed.set()
        self._shut()
        self._exit(-9)


class ThreadLauncher:
    def __init__(self, factory: Callable[[Any, ThreadWorker], Runtime]) -> None:
        self.factory = factory
        self.workers: list[ThreadWorker] = []

    async def __call__(self, data: socket.socket, ctl: socket.socket, args: WorkerArgs) -> ThreadWorker:
        w = ThreadWorker(data, ctl)
        self.workers.append(w)
        w.run(self.factory, args)
        return w
