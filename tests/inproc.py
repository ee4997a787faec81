"""A real node inside the test process: `node.server` on its own uvloop event loop in a
background thread, on loopback port 0.

    with run_node(tmp_path / "data", package, args=["--admin-key", "k"]) as node:
        requests.post(node.url("svc", "ep", "predict"), json=...)

    async with async_run_node(tmp_path / "data", package) as node:  # for asynchronous clients
        ...

The same surface as `tests.nodeproc` (NodeClient: `http`, `grpc`, `status()`, the admin key,
`log()`), and the same arguments, read by `apinode serve`'s own parser; `**overrides` set
NodeSettings fields directly. The node's servers and workers are real (worker processes
are children of the test process); only the front skips the interpreter start and imports,
so the test's synchronous clients (dataikuapi, gRPC stubs, requests) call it as before.

What needs a separate process stays with tests.nodeproc: kill -9 or signals to the node,
the CLI, the node's stdout, its resource limits (RLIMIT_NOFILE, CPU affinity). `stop()` runs
the node's own shutdown (drain, grace, workers stopped) and waits for the thread; it fails
the test if the node does not stop in time or leaves a worker process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop

from node.cli import build_parser, settings_from_args
from node.server import Node, serve
from node.settings import NodeSettings
from tests.nodeclient import RUNNING, NodeClient

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_SPAWNING = threading.Lock()


class _Loop(uvloop.Loop):
    """uvloop, but spawning one process at a time across the loops of the test process:
    uvloop refuses to fork while another of its loops forks ("Racing with another loop to
    spawn a process"), which in-process nodes running side by side (a fleet, a module's
    node beside a test's own) would otherwise meet when their pools start workers. A node
    process has one loop, so the node itself never needs this."""

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        while not _SPAWNING.acquire(blocking=False):  # never blocks this loop; cancellable
            await asyncio.sleep(0.002)
        try:
            return await super().subprocess_exec(*args, **kwargs)
        finally:
            _SPAWNING.release()


def settings_for(data_dir: Path, *packages: Path, args: Sequence[str] = (), **overrides: Any) -> NodeSettings:
    """The settings `apinode serve --data-dir DATA_DIR ARGS PACKAGES` would run with, on
    loopback port 0, with `overrides` on top."""
    ns = build_parser().parse_args(
        ["serve", "--data-dir", str(data_dir), "--http-port", "0", "--grpc-port", "0", *args, *map(str, packages)]
    )
    return replace(settings_from_args(ns), **overrides)


class InProcNode(NodeClient):
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.http_port = 0
        self.grpc_port = 0
        self.node: Node | None = None  # the running node (its objects belong to its loop's thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started: Future[None] = Future()
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        self._workers: set[int] = set()

    # ---- NodeClient ----------------------------------------------------------------------
    def log(self) -> str:
        """What was logged since the node started: its `node` loggers from INFO up, and
        warnings and errors of the libraries (gRPC, aiohttp) of the test process."""
        return self._log.getvalue()

    def given_admin_key(self) -> str | None:
        return self.settings.admin_keys[0] if self.settings.admin_keys else None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- running -------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        logger = logging.getLogger("node")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._handler)  # and what gRPC or aiohttp log, as a node's log has
        self._thread = threading.Thread(target=self._run, name=f"apinode {self.data_dir.name}", daemon=True)
        self._thread.start()
        try:
            self._started.result(timeout)
        except BaseException:
            self._join(timeout)
            self._detach_log()
            raise
        assert self.node is not None
        self.http_port, self.grpc_port = self.node.http_port, self.node.grpc_port
        RUNNING[self.grpc] = self

    def _run(self) -> None:
        try:
            uvloop.run(self._main(), loop_factory=_Loop)
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                logging.getLogger("node").exception("in-process node failed")
                raise

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def started(node: Node) -> None:
            self.node = node
            self._started.set_result(None)

        # No signal handler: this is not the main thread, and the test process is not the node's.
        await serve(self.settings, on_started=[started], stop=self._stop, handle_signals=False)

    def worker_pids(self) -> set[int]:
        """The worker processes the node runs now."""
        node = self.node
        if node is None or self._loop is None or self._loop.is_closed():
            return set()

        async def status() -> dict[str, Any]:
            return node.dataplane.status()

        doc = asyncio.run_coroutine_threadsafe(status(), self._loop).result(30)
        return {
            pid
            for svc in doc["services"].values()
            for gens in (svc["generations"], svc.get("warm", {}))
            for endpoints in gens.values()
            for ep in endpoints.values()
            for pid in (ep.get("workers") or {}).get("pids", ())
        }

    def stop(self, timeout: float = 60.0) -> None:
        """The node's shutdown, as on SIGTERM; then checks that no worker outlives it."""
        if self._thread is None:
            return
        workers = self.worker_pids() if self._thread.is_alive() else set()
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        self._join(timeout)
        self._detach_log()
        alive = {pid for pid in workers if _running(pid)}
        assert not alive, f"worker processes left running by the in-process node: {sorted(alive)}"

    def _join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the in-process node did not stop within {timeout} s; log:\n{self.log()[-3000:]}")
        self._thread = None

    def _detach_log(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger("node").setLevel(self._level)


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_node(data_dir: Path, *packages: Path, args: Sequence[str] = (), **overrides: Any) -> InProcNode:
    data_dir.mkdir(parents=True, exist_ok=True)
    node = InProcNode(settings_for(data_dir, *packages, args=args, **overrides))
    node.start()
    return node


@contextlib.contextmanager
def run_node(data_dir: Path, *packages: Path, args: Sequence[str] = (), **overrides: Any) -> Iterator[InProcNode]:
    node = start_node(data_dir, *packages, args=args, **overrides)
    try:
        yield node
    finally:
        node.stop()


@contextlib.asynccontextmanager
async def async_run_node(
    data_dir: Path, *packages: Path, args: Sequence[str] = (), **overrides: Any
) -> AsyncIterator[InProcNode]:
    """`async with async_run_node(...) as node:` for tests with asynchronous clients (the node
    runs on its own loop all the same: the test's loop is never blocked by it)."""
    node = await asyncio.to_thread(start_node, data_dir, *packages, args=args, **overrides)
    try:
        yield node
    finally:
        await asyncio.to_thread(node.stop)
