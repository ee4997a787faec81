"""A pool's workers: starting them, replacing the ones that die, retiring the idle ones.

:class:`Crew` is the half of a :class:`~node.supervisor.pool.Pool` that owns processes;
the pool adds the requests (queue, dispatch, batching) and tells the crew how many
requests wait. When to grow, retire or back off is decided by
:class:`~node.supervisor.scaling.Scaling`; whether the node has a slot for one more
worker by :class:`~node.supervisor.slots.Slots` (for which a crew is a `SlotHolder`).

Faults: a worker that dies is replaced (its requests fail in the pool); repeated crashes
back off and make the endpoint not ready, with the reason. A worker the front killed over
`max_run_ms` is replaced at once, without counting as a crash.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from node import errors
from node.supervisor.lag import LagMonitor
from node.supervisor.poolkey import PoolKey
from node.supervisor.process import KillReason, Launcher, SpawnFailed, WorkerArgs, WorkerProcess, spawn_process
from node.supervisor.scaling import Scaling
from node.supervisor.settings import PoolSettings
from node.supervisor.slots import Slots
from node.worker import protocol as p
from node.worker.spec import WorkerSpec

log = logging.getLogger("node.supervisor")
_LOST_GRACE_S = 2.0
LOAD_NICE_EXTRA = 5  # an incoming generation loads this much nicer than the serving workers


@dataclass(frozen=True, slots=True)
class PoolContext:
    """What a pool needs of the node: shared slots and lag monitor, worker settings."""

    slots: Slots
    lag: LagMonitor = field(default_factory=lambda: LagMonitor(0))
    worker_nice: int = 0
    ping_timeout: float = 10.0  # s a pong may be late before the worker counts as hung
    launch: Launcher = spawn_process
    max_frame: int = p.MAX_FRAME
    # A batching queue whose wait stays above this (s) for a whole STANDING_INTERVAL_S is
    # standing: see Pool.queue_full (0: off).
    queue_target: float = 0.0


@dataclass(slots=True)
class PoolStats:
    served: int = 0
    rejected: int = 0
    timed_out: int = 0
    cancelled: int = 0
    crashed: int = 0
    spawn_failures: int = 0  # worker processes that could not be started (OSError: fds, memory)
    failed: int = 0  # requests that failed in a worker (crash, user error, run timeout)
    run_timeouts: int = 0
    restarts: int = 0
    batches: int = 0
    batched_rows: int = 0


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """A pool's workers by state, retiring ones left out (status and metrics)."""

    busy: int
    idle: int
    starting: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Crew(abc.ABC):
    def __init__(
        self,
        key: PoolKey,
        spec: WorkerSpec,
        settings: PoolSettings,
        node: PoolContext,
        *,
        batchable: bool,
        incoming: bool = False,
    ) -> None:
        self.key = key
        self.spec = spec
        self.settings = settings
        self.node = node
        self.cpu_bound = batchable  # prediction workers keep a CPU busy while they run
        # Loading beside a generation that serves: its first workers load below the serving
        # workers' priority (replacements and growth later are urgent, and load at theirs).
        self.incoming = incoming
        self.scaling = Scaling(settings, batching=batchable)
        self.workers: set[WorkerProcess] = set()
        self.idle: list[WorkerProcess] = []
        self.starting = 0  # workers spawned whose endpoint has not loaded yet
        self.waiting = 0  # requests queued (the pool's queue keeps these two)
        self.waiting_rows = 0  # their rows (prediction pools batch by rows)
        self.stats = PoolStats()
        self.closed = False
        self.last_error: str | None = None
        self.served_once = False  # a worker of this pool has loaded: later gaps are replacements
        self._started = False  # start() succeeded: failures since are retried, not raised
        self._loop = asyncio.get_running_loop()
        self._replenish_handle: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()

    # ---- what the pool does with a worker, and with its queue on close -----------------
    @abc.abstractmethod
    def _worker_free(self, w: WorkerProcess) -> None:
        """A worker is ready for work: give it some, or let it idle."""

    @abc.abstractmethod
    def _fail_queued(self, exc: errors.ApiNodeError) -> None:
        """The pool is closing: every queued request fails with `exc`."""

    # ---- sizes -------------------------------------------------------------------------
    @property
    def held(self) -> int:
        """Worker slots held: every process alive or starting, retiring ones included."""
        return len(self.workers)

    @property
    def size(self) -> int:
        """Workers alive or starting, not counting those retiring."""
        return sum(1 for w in self.workers if not w.retiring)

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.state == "busy")

    @property
    def live(self) -> int:
        """Workers that can take a request now or when they free up."""
        return sum(1 for w in self.workers if w.state in ("idle", "busy") and w.sendable and not w.retiring)

    @property
    def coming(self) -> int:
        """Workers starting, and those whose channel closed (dying: replaced when their
        exit is seen, a moment later)."""
        dying = sum(
            1 for w in self.workers if w.state in ("idle", "busy", "lost") and not w.sendable and not w.retiring
        )
        return self.starting + dying

    @property
    def floor(self) -> int:
        return self.settings.floor

    @property
    def started(self) -> bool:
        return self._started

    def counts(self) -> WorkerCounts:
        states = [w.state for w in self.workers if not w.retiring]
        return WorkerCounts(states.count("busy"), states.count("idle"), states.count("starting"), len(states))

    def pids(self) -> list[int]:
        return sorted(w.pid for w in self.workers if w.pid is not None and not w.retiring)

    @property
    def ready(self) -> bool:
        return not self.closed and (
            self.live > 0 or self.scaling.replacing(served_once=self.served_once, coming=self.coming)
        )

    @property
    def not_ready_reason(self) -> str | None:
        if self.ready:
            return None
        if self.closed:
            return "endpoint is shutting down"
        if self.last_error:
            return f"no live worker: {self.last_error}"
        return "workers are starting"

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self, size: int | None = None) -> None:
        """Starts `floor` workers, or `size` (up to `ceil`, as the node-wide cap allows), and
        waits for them; raises if the endpoint cannot load."""
        self.node.slots.join(self)
        workers = [self._spawn(loading=self.incoming) for _ in range(self.settings.floor)]
        for _ in range(min(size or 0, self.settings.ceil) - self.settings.floor):
            if not self.node.slots.may_start(self):
                break
            workers.append(self._spawn(loading=self.incoming))
        results = await asyncio.gather(*(self._start_worker(w) for w in workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close(drain=False)
            raise failures[0]
        self._started = True

    async def close(self, *, drain: bool, timeout: float = 30.0) -> None:
        """Stops taking requests; with `drain`, lets queued and running ones finish first."""
        self.closed = True
        if self._replenish_handle is not None:
            self._replenish_handle.cancel()
        if drain and (self.waiting or self.busy):
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning("%s: drain timed out with %d queued, %d busy", self.key, self.waiting, self.busy)
        self._fail_queued(errors.ShuttingDown(f"endpoint {self.key} is shutting down"))
        workers = list(self.workers)
        for w in workers:
            w.retiring = True
        await asyncio.gather(*(w.stop() for w in workers))
        self.node.slots.leave(self)

    def apply(self, settings: PoolSettings) -> None:
        """New settings on a live pool (tuning): grows to the new floor now; idle workers over
        the new ceil retire now, busy ones when they free up; cruise applies at the next tick."""
        self.settings = settings
        self.scaling.apply(settings)
        for _ in range(self.scaling.missing(self.size)):
            self._launch(self._spawn())
        for w in list(self.idle):
            if not self.scaling.over_ceil(self.size):
                break
            self.retire(w)

    def park(self, parked: bool) -> None:
        """Parked (a warm generation kept for rollback), idle workers above `floor` retire
        after the grace period; unparked, the pool is back to `cruise`."""
        self.scaling.parked = parked

    def tick(self, now: float, *, ping: bool = False) -> None:
        """Retires the longest-idle worker above `cruise` (one per tick); with `ping`,
        pings every worker, and kills one whose pong is late by the ping timeout."""
        oldest = min(self.idle, key=lambda w: w.idle_since, default=None)
        if oldest and self.scaling.retire_idle(now, waiting=self.waiting, size=self.size, idle_since=oldest.idle_since):
            self.retire(oldest)
        for w in list(self.workers):
            if w.state == "starting" or w.retiring:
                continue
            if w.ping_sent_at is not None and now - w.ping_sent_at > self.node.ping_timeout:
                w.kill(KillReason.HUNG, f"stopped answering pings for {now - w.ping_sent_at:.1f} s (hung)")
            elif ping:
                w.ping()

    # ---- growth (Slots asks through wants_worker and add_worker) -----------------------
    def _growth(self) -> int:
        if self.closed:
            return 0
        return self.scaling.growth(
            time.monotonic(), waiting=self.waiting, starting=self.starting, live=self.live, size=self.size
        )

    def wants_worker(self) -> bool:
        return self._growth() > 0

    def add_worker(self) -> None:
        self._launch(self._spawn())

    def grow(self) -> None:
        """Adds the workers the scaling policy asks for, as the node's slots allow."""
        for _ in range(self._growth()):
            if not self.node.slots.may_start(self):
                return
            self._launch(self._spawn())

    # ---- workers -----------------------------------------------------------------------
    def _spawn(self, *, loading: bool = False) -> WorkerProcess:
        """A worker holding a slot from now until it exits (see node.supervisor.slots)."""
        nice = self.node.worker_nice
        load_nice = min(nice + LOAD_NICE_EXTRA, 19) - nice if loading else 0
        w = WorkerProcess(
            str(self.key),
            self.spec,
            self._on_exit,
            args=WorkerArgs(nice, load_nice, self.node.max_frame),
            on_lost=self.on_lost,
            launch=self.node.launch,
        )
        w.epoch = self.scaling.crash_epoch
        self.workers.add(w)
        self.starting += 1
        return w

    def _launch(self, w: WorkerProcess) -> None:
        task = asyncio.create_task(self._start_worker(w))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged by _on_exit

    async def _start_worker(self, w: WorkerProcess) -> None:
        try:
            await w.start(self.settings.start_timeout_ms / 1000)
        except SpawnFailed as exc:
            self.starting -= 1
            self._spawn_failed(w, str(exc))
            raise errors.NotReady(f"endpoint {self.key}: cannot start a worker: {exc}") from exc
        except errors.ApiNodeError as exc:
            self.starting -= 1
            self.last_error = f"worker failed to load: {exc.message}"
            w.kill(KillReason.LOAD_FAILED, self.last_error)
            raise
        except BaseException:
            self.starting -= 1
            raise
        self.starting -= 1
        self.served_once = True
        if self.closed:
            await w.stop()
            return
        self._worker_free(w)
        if self.waiting:
            self.grow()  # held back while no worker was live (see Scaling.growth)

    def _spawn_failed(self, w: WorkerProcess, cause: str) -> None:
        """No process was started: its slot is free again; retry with the crash back-off."""
        self.workers.discard(w)
        self.node.slots.released()
        self.stats.spawn_failures += 1
        if self.closed or not self._started:  # at load, the failure fails the load instead
            return
        self.last_error = f"cannot start a worker: {cause}"
        delay = self.scaling.spawn_failed(time.monotonic())
        log.error(
            "%s: cannot start a worker: %s; retrying in %.1f s (failure #%d in a row)",
            self.key,
            cause,
            delay,
            self.scaling.consecutive_crashes,
        )
        self._schedule_replenish(delay)

    def _schedule_replenish(self, delay: float) -> None:
        if self._replenish_handle is not None:
            return
        if delay <= 0:
            self._replenish()  # at once: requests are waiting for it
        else:
            self._replenish_handle = self._loop.call_later(delay, self._replenish)

    def _replenish(self) -> None:
        self._replenish_handle = None
        if self.closed:
            return
        for _ in range(self.scaling.missing(self.size)):
            self.stats.restarts += 1
            self._launch(self._spawn())
        self.grow()

    def retire(self, w: WorkerProcess) -> None:
        w.retiring = True
        if w in self.idle:
            self.idle.remove(w)
        asyncio.create_task(w.stop())  # noqa: RUF006 - _on_exit fires when it ends

    def on_lost(self, w: WorkerProcess) -> None:
        """Its data channel closed: it takes nothing more; its exit is handled by _on_exit."""
        if w in self.idle:
            self.idle.remove(w)
        if w.state == "idle":
            w.state = "lost"
        if w.lost or w.retiring or self.closed:  # stopped by us: its exit follows
            return
        w.lost = True
        # It should be exiting; one that does not (it closed the channel itself) is ended.
        self._loop.call_later(_LOST_GRACE_S, _kill_if_alive, w)

    def _on_exit(self, w: WorkerProcess) -> None:
        self.workers.discard(w)
        if w in self.idle:
            self.idle.remove(w)
        self.node.slots.released()
        if w.retiring or self.closed:
            self._check_drained()
            return
        if w.kill_reason is KillReason.RUN_TIMEOUT:
            log.warning("%s: killed worker %s: %s", self.key, w.label, w.kill_detail)
            self.stats.restarts += 1
            self._launch(self._spawn())  # at once, on the slot the killed one gave back
            return
        reason = w.kill_detail or f"worker {w.label} (pid {w.pid}) {w.exit_text}"
        self.stats.crashed += 1
        self.last_error = reason
        delay = self.scaling.crashed(time.monotonic(), served_any=w.tasks_done > 0, epoch=w.epoch)
        log.error(
            "%s: %s; replacing it in %.1f s (crash #%d in a row)",
            self.key,
            reason,
            delay,
            self.scaling.consecutive_crashes,
        )
        self._schedule_replenish(delay)

    def _check_drained(self) -> None:
        if self.closed and self.waiting == 0 and self.busy == 0:
            self._drained.set()


def _kill_if_alive(w: WorkerProcess) -> None:
    if w.alive:
        w.kill(KillReason.CHANNEL_CLOSED, "closed its data channel without exiting")
