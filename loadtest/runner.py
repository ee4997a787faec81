"""Running a load: in this event loop (:func:`run_load`) or as a whole (:func:`run`).

:func:`run_load` is one client process's work: load and encode the bodies, open the
transport, run the warmup (same load, not measured), then the measured phase, and return
its :class:`LoadResult` with the busy fraction of its event-loop thread (the self-check
that the generator was not the bottleneck). With a :class:`Shard` it runs only its share
of a multi-process run: its part of the clients, of the rate and of the request count.

:func:`run` is what the CLI and benchmark suites call: one process on uvloop, or
``procs`` client processes (see :mod:`loadtest.procs`) whose results are merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loadtest.config import LoadConfig
from loadtest.loops import Bounds, closed_loop, open_loop
from loadtest.payloads import Picker, load_bodies
from loadtest.result import LoadResult
from loadtest.selfcheck import CpuMeter
from loadtest.stats import Recorder
from loadtest.transport import Transport, open_transport

PROGRESS_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class Shard:
    """Process ``index`` of ``count`` sharing one run."""

    index: int = 0
    count: int = 1

    def share(self, total: int) -> int:
        return total // self.count + (1 if self.index < total % self.count else 0)


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view of a run, a few times a second."""

    phase: str  # "warmup" | "measure"
    elapsed: float
    sent: int
    ok: int
    errors: int
    dropped: int


ProgressFn = Callable[[Progress], None]


def effective_procs(config: LoadConfig) -> int:
    """Client processes actually used: never more than clients, or than requests."""
    n = config.procs
    if not config.open_loop:
        n = min(n, config.concurrency)
    if config.requests is not None:
        n = min(n, config.requests)
    return max(1, n)


def bodies_of(config: LoadConfig) -> list[Any]:
    if config.bodies is not None:
        return list(config.bodies)
    if config.payload is not None:
        return load_bodies(config.payload, config.target.endpoint)
    return [{}]


async def run_load(
    config: LoadConfig,
    *,
    shard: Shard | None = None,
    progress: ProgressFn | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> LoadResult:
    """Runs the load (or ``shard``'s share of it) in the running event loop.

    ``ready`` is awaited once the transport is open, before any request: a multi-process
    run uses it to start its processes together.
    """
    config.validate()
    shard = shard or Shard()
    bodies = bodies_of(config)
    seed = None if config.seed is None else config.seed + shard.index
    picker = Picker(
        len(bodies),
        sample=config.sample,
        seed=seed,
        offset=shard.index * len(bodies) // shard.count,
    )
    clients = shard.share(config.concurrency)
    transport = await open_transport(config, bodies, concurrency=clients)
    try:
        if ready is not None:
            await ready()
        drive = _Driver(config, shard, transport, picker, clients, random.Random(seed))
        if config.warmup > 0:
            await drive(Recorder(), Bounds(duration=config.warmup), "warmup", progress)
        rec = Recorder()
        requests = None if config.requests is None else shard.share(config.requests)
        meter = CpuMeter()
        meter.start()
        t0 = time.perf_counter()
        await drive(rec, Bounds(config.duration, requests), "measure", progress)
        wall = time.perf_counter() - t0
        cpu = await meter.stop()
    finally:
        await transport.aclose()
    return LoadResult.from_recorder(rec, wall, cpu, config.summary())


class _Driver:
    """Runs one phase of the configured loop, reporting progress alongside."""

    def __init__(
        self,
        config: LoadConfig,
        shard: Shard,
        transport: Transport,
        picker: Picker,
        clients: int,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._shard = shard
        self._transport = transport
        self._picker = picker
        self._clients = clients
        self._rng = rng

    async def __call__(self, rec: Recorder, bounds: Bounds, phase: str, progress: ProgressFn | None) -> None:
        t0 = time.perf_counter()
        reporter = None
        if progress is not None:
            reporter = asyncio.get_running_loop().create_task(_report(progress, phase, rec, t0))
        try:
            await self._loop(rec, bounds)
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            if progress is not None:
                progress(_snapshot(phase, time.perf_counter() - t0, rec))

    async def _loop(self, rec: Recorder, bounds: Bounds) -> None:
        c = self._config
        if c.rate is None:
            await closed_loop(self._transport, self._picker, rec, clients=self._clients, bounds=bounds)
            return
        await open_loop(
            self._transport,
            self._picker,
            rec,
            rate=c.rate / self._shard.count,
            bounds=bounds,
            poisson=c.poisson,
            max_inflight=max(1, c.max_inflight // self._shard.count),
            rng=self._rng,
            # Constant gaps: process i sends i/rate after process 0, so the sum is even.
            phase=0.0 if c.poisson else self._shard.index / c.rate,
        )


def _snapshot(phase: str, elapsed: float, rec: Recorder) -> Progress:
    return Progress(phase, elapsed, rec.sent, rec.ok, rec.error_count, rec.dropped)


async def _report(progress: ProgressFn, phase: str, rec: Recorder, t0: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        progress(_snapshot(phase, time.perf_counter() - t0, rec))


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Runs the block on ``cpus`` (like taskset), restoring the previous affinity after."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run(config: LoadConfig, *, progress: ProgressFn | None = None) -> LoadResult:
    """Runs a whole load and returns its merged result (blocking; not inside an event loop).

    One process runs on uvloop in this thread; with ``procs`` > 1, client processes are
    spawned, started together, and their histograms merged.
    """
    config.validate()
    n = effective_procs(config)
    if n > 1:
        from loadtest.procs import run_processes

        return run_processes(config, n, progress)
    import uvloop

    with pinned(config.cpus):
        return uvloop.run(run_load(config, progress=progress))
