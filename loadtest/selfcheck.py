"""The generator's self-check: was this client process's event loop busy all the time?

Python sends from one thread, so a client process is saturated when its event-loop
thread always has work: requests then leave late and answers are read late, and the
figures describe the generator rather than the server. The meter reads how long the loop
thread *wanted* the CPU (gRPC's own C threads work in parallel and are not the limit):
on Linux, its time on a CPU plus its time waiting for one in the run queue
(``/proc/self/task/<tid>/schedstat``), so that a generator starved by other processes on
the machine counts as saturated too; elsewhere, its CPU time (``time.thread_time``).
This is taken against wall time over the whole phase and over one-second windows, so
that a saturated stretch (a connection storm, an overload) is not averaged away.

gRPC's C-core threads do most of a grpc.aio call's work (some 300 µs of CPU per unary
call, against 25 µs for the raw HTTP transport). With cores to spare they run beside the
loop; on a generator pinned to one core they compete with it, and the loop thread alone
would look idle while the process is CPU-bound. So the meter also takes the whole
process's CPU time as a share of the cores it may run on, and reports the larger of the
two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 1.0


def _demand_clock() -> tuple[Callable[[], float], Callable[[], None]]:
    """Seconds the calling thread has run or waited to run (CPU time where unknown), and
    how to release the clock. The file stays open: a run that holds thousands of
    connections must not fail to read its own clock for want of a file descriptor."""
    try:
        fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
    except OSError:
        return time.thread_time, lambda: None

    def schedstat() -> float:
        on_cpu, waiting = os.pread(fd, 128, 0).split()[:2]
        return (int(on_cpu) + int(waiting)) / 1e9

    try:
        schedstat()
    except (OSError, ValueError):
        os.close(fd)
        return time.thread_time, lambda: None
    return schedstat, lambda: os.close(fd)


def _allowed_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class CpuUse:
    mean: float  # busy fraction of the loop thread (or the process's cores) over the phase
    peak: float  # the busiest one-second window (the mean if the phase was shorter)


class CpuMeter:
    """Measures the running loop thread's busy fraction between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self._cpu0 = 0.0
        self._proc0 = 0.0
        self._cores = 1
        self._t0 = 0.0
        self._peak = 0.0
        self._task: asyncio.Task[None] | None = None
        self._clock: Callable[[], float] = time.thread_time
        self._release: Callable[[], None] = lambda: None

    def start(self) -> None:
        """Starts measuring the thread that calls it (the running loop's)."""
        self._clock, self._release = _demand_clock()
        self._cores = _allowed_cores()
        self._cpu0, self._proc0, self._t0 = self._clock(), time.process_time(), time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._windows())

    def _busy(self, cpu: float, proc: float, wall: float) -> float:
        """The loop thread's busy fraction, or the process's share of its cores if larger."""
        return max(cpu, proc / self._cores) / wall if wall > 0 else 0.0

    async def _windows(self) -> None:
        cpu, proc, t = self._cpu0, self._proc0, self._t0
        while True:
            await asyncio.sleep(WINDOW)
            cpu1, proc1, t1 = self._clock(), time.process_time(), time.perf_counter()
            self._peak = max(self._peak, self._busy(cpu1 - cpu, proc1 - proc, t1 - t))
            cpu, proc, t = cpu1, proc1, t1

    async def stop(self) -> CpuUse:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        wall = time.perf_counter() - self._t0
        mean = self._busy(self._clock() - self._cpu0, time.process_time() - self._proc0, wall)
        self._release()
        return CpuUse(mean=mean, peak=max(self._peak, mean))
