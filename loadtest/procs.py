"""Several client processes for one run, so that the generator is not the bottleneck.

One Python event loop sends a few thousand requests a second; past that, the figures
would be the generator's. The parent spawns ``n`` processes (``spawn``, so no inherited
event loop or gRPC state), each running :func:`loadtest.runner.run_load` on its
:class:`Shard`. Each reports "ready" once its payloads are encoded and its transport is
open; the parent then starts them all at once. While they run, each writes its counters
into a shared array that the parent sums for the progress line. At the end each sends its
result, histograms encoded, over a queue, and the parent merges them.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from loadtest.config import ConfigError, LoadConfig, LoadError
from loadtest.result import LoadResult
from loadtest.runner import Progress, ProgressFn, Shard, pinned, run_load

_SLOTS = 5  # per process: phase (0 warmup, 1 measure), sent, ok, errors, dropped
_READY_TIMEOUT = 120.0
_POLL = 0.25


def _worker(
    config: LoadConfig,
    shard: Shard,
    results: mp.Queue[tuple[str, int, Any]],
    go: Any,
    counters: SynchronizedArray[int],
) -> None:
    import asyncio

    import uvloop

    base = shard.index * _SLOTS

    def progress(p: Progress) -> None:
        counters[base : base + _SLOTS] = [
            1 if p.phase == "measure" else 0,
            p.sent,
            p.ok,
            p.errors,
            p.dropped,
        ]

    async def ready() -> None:
        results.put(("ready", shard.index, None))
        if not await asyncio.to_thread(go.wait, _READY_TIMEOUT):
            raise LoadError("never told to start")

    try:
        with pinned(config.cpus):
            result = uvloop.run(run_load(config, shard=shard, progress=progress, ready=ready))
        results.put(("result", shard.index, result.to_dict()))
    except ConfigError as exc:
        results.put(("config", shard.index, str(exc)))
    except BaseException as exc:
        results.put(("error", shard.index, f"{type(exc).__name__}: {exc}"))


def run_processes(config: LoadConfig, n: int, progress: ProgressFn | None) -> LoadResult:
    """Runs ``config`` over ``n`` client processes and merges their results."""
    ctx = mp.get_context("spawn")
    results: mp.Queue[tuple[str, int, Any]] = ctx.Queue()
    go = ctx.Event()
    counters: SynchronizedArray[int] = ctx.Array("q", n * _SLOTS, lock=False)
    workers = [
        ctx.Process(
            target=_worker,
            args=(config, Shard(i, n), results, go, counters),
            name=f"loadtest-client-{i}",
            daemon=True,
        )
        for i in range(n)
    ]
    for w in workers:
        w.start()
    t0 = time.perf_counter()

    def tick() -> None:
        if progress is not None:
            progress(_progress(counters, n, time.perf_counter() - t0))

    done: dict[int, Any] = {}
    try:
        _gather(results, workers, "ready", _READY_TIMEOUT, None)
        go.set()
        t0 = time.perf_counter()
        done = _gather(results, workers, "result", None, tick)
    finally:
        for w in workers:
            # After a failure the others' figures are useless: stop them now.
            w.join(timeout=5.0 if len(done) == n else 0.0)
            if w.is_alive():
                w.kill()
                w.join()
    tick()
    return LoadResult.merge((LoadResult.from_dict(done[i]) for i in range(n)), config.summary())


def _gather(
    results: mp.Queue[tuple[str, int, Any]],
    workers: list[Any],
    kind: str,
    timeout: float | None,
    tick: Callable[[], None] | None,
) -> dict[int, Any]:
    """Waits for a ``kind`` message from every worker, failing fast if one fails or dies."""
    got: dict[int, Any] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while len(got) < len(workers):
        try:
            what, index, data = results.get(timeout=_POLL)
        except queue_mod.Empty:
            if tick is not None:
                tick()
            dead = [i for i, w in enumerate(workers) if i not in got and w.exitcode is not None]
            if not dead:
                if deadline is not None and time.monotonic() > deadline:
                    raise LoadError(f"client processes not {kind} after {timeout:.0f}s") from None
                continue
            try:  # its last message may still be in the pipe
                what, index, data = results.get(timeout=1.0)
            except queue_mod.Empty:
                code = workers[dead[0]].exitcode
                raise LoadError(f"client process {dead[0]} died (exit code {code})") from None
        if what == "config":
            raise ConfigError(data)
        if what == "error":
            raise LoadError(f"client process {index}: {data}")
        if what == kind:
            got[index] = data
    return got


def _progress(counters: SynchronizedArray[int], n: int, elapsed: float) -> Progress:
    rows = [counters[i * _SLOTS : (i + 1) * _SLOTS] for i in range(n)]
    return Progress(
        phase="measure" if all(r[0] == 1 for r in rows) else "warmup",
        elapsed=elapsed,
        sent=sum(r[1] for r in rows),
        ok=sum(r[2] for r in rows),
        errors=sum(r[3] for r in rows),
        dropped=sum(r[4] for r in rows),
    )
