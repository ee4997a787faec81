"""A pool of worker processes for one endpoint of one generation.

Requests go straight to an idle worker; when none is idle they wait in a FIFO queue, each
with a timer of `timeout` ms. What `queue` bounds depends on the endpoint kind (see
`queue_full`): requests for one-request-at-a-time pools (functions, SQL), batches of up
to `max_batch` rows for prediction pools, whose workers drain a whole batch per run.
The pool grows towards `ceil` while requests wait (as the supervisor grants slots under
the node-wide cap) and shrinks back to `cruise` once workers idle past a grace period.

Batching: when a worker frees up, a prediction pool sends it everything queued (up to
`max_batch` rows) as one message and one model run; nothing waits for a batch to fill.

Faults: a worker that dies fails only the requests it held (WorkerCrashed) and is replaced;
repeated crashes back off exponentially and make the endpoint not ready, with the reason.
Over `max_run_ms` a worker is killed and replaced, and its callers get RunTimeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from node import errors
from node.supervisor.process import ChannelClosed, SpawnFailed, WorkerProcess
from node.supervisor.settings import PoolSettings

if TYPE_CHECKING:
    from node.supervisor.supervisor import Supervisor

log = logging.getLogger("node.supervisor")
_MAX_BACKOFF_S = 10.0
_LOST_GRACE_S = 2.0
LOAD_NICE_EXTRA = 5  # an incoming generation loads this much nicer than the serving workers


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


class Pending:
    __slots__ = ("done", "enqueued", "fut", "n", "payload", "timer")

    def __init__(self, payload: Any, n: int, fut: asyncio.Future[Any]) -> None:
        self.payload = payload
        self.n = n
        self.fut = fut
        self.enqueued = time.perf_counter()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False  # left the queue: dispatched, expired or cancelled


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request's result and where its time went (microseconds)."""

    result: Any
    wait_us: int
    compute_us: int
    batch_rows: int


class Pool:
    def __init__(
        self,
        key: str,
        spec: dict[str, Any],
        settings: PoolSettings,
        supervisor: Supervisor,
        *,
        op: str,
        batchable: bool,
        incoming: bool = False,
    ) -> None:
        self.key = key
        # Loading beside a generation that serves: its first workers load below the serving
        # workers' priority (replacements and growth later are urgent, and load at theirs).
        self.incoming = incoming
        self.parked = False  # a warm generation kept for rollback: `floor` workers, no more
        self.spec = spec
        self.settings = settings
        self.sup = supervisor
        self.op = op
        self.batchable = batchable
        self.workers: set[WorkerProcess] = set()
        self.idle: list[WorkerProcess] = []
        self.queue: deque[Pending] = deque()
        self.waiting = 0
        self.waiting_rows = 0  # rows of the waiting requests (prediction pools batch by rows)
        self.starting = 0
        self.batch_s = 0.0  # moving average of one model run, as the front sees it (s)
        self.stats = PoolStats()
        self.closed = False
        self.consecutive_crashes = 0
        self.backoff_until = 0.0
        self.last_error: str | None = None
        self.served_once = False  # a worker of this pool has loaded: later gaps are replacements
        self._started = False  # start() succeeded: failures since are retried, not raised
        self._crash_epoch = 0  # crashes so far: a worker records it at spawn (see _on_exit)
        self._loop = asyncio.get_running_loop()
        self._replenish_handle: asyncio.TimerHandle | None = None
        grow_ms = settings.grow_after_ms if settings.grow_after_ms is not None else (10 if batchable else 0)
        self._grow_after = grow_ms / 1000
        self._grow_handle: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()

    # ---- sizes -------------------------------------------------------------------------
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
    def replacing(self) -> bool:
        """No live worker, but a replacement for one that just died is starting: requests
        wait for it (a single crash is not an outage; repeated ones are)."""
        return self.served_once and self.consecutive_crashes <= 1 and self.coming > 0

    @property
    def ready(self) -> bool:
        return not self.closed and (self.live > 0 or self.replacing)

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
        workers = [self._spawn(floor=True, loading=self.incoming) for _ in range(self.settings.floor)]
        for _ in range(min(size or 0, self.settings.ceil) - self.settings.floor):
            if not self.sup.take_slot(self):
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
        while self.queue:
            pend = self.queue.popleft()
            self._leave_queue(pend)
            if not pend.fut.done():
                pend.fut.set_exception(errors.ShuttingDown(f"endpoint {self.key} is shutting down"))
        workers = list(self.workers)
        for w in workers:
            w.retiring = True
        await asyncio.gather(*(w.stop() for w in workers))

    # ---- requests ----------------------------------------------------------------------
    def refuse_if_full(self) -> None:
        """Raises what `submit` would raise at once (shutting down, not ready after crashes,
        queue full), so that a caller can be refused before anything is spent decoding or
        enriching its request."""
        if self.closed:
            raise errors.ShuttingDown(f"endpoint {self.key} is not taking requests")
        if self.idle and self.waiting == 0:
            return
        if self.consecutive_crashes >= 2 and not self.ready:
            raise errors.NotReady(f"endpoint {self.key} is not ready: {self.not_ready_reason}")
        if self.live == 0 and self.coming > 0:
            # Waiting for a worker that is starting (a replacement, or the pool's first): not
            # overload. The queue timeout bounds the wait, the servers' connection and stream
            # limits bound how many wait.
            return
        refusal = self._overloaded()
        if refusal is not None:
            self.stats.rejected += 1
            raise refusal

    def overload(self) -> errors.Overloaded | None:
        """The Overloaded that `refuse_if_full` would raise now, built but neither raised nor
        counted, or None (including when it would raise something else: shutting down, not
        ready). The HTTP fast refusal (node.http.refuse) asks before reading the body."""
        if self.closed or (self.idle and self.waiting == 0):
            return None
        refusal = self._overloaded()
        if (
            refusal is None
            or (self.consecutive_crashes >= 2 and not self.ready)
            or (self.live == 0 and self.coming > 0)
        ):
            return None
        return refusal

    def _overloaded(self) -> errors.Overloaded | None:
        """Overload: a full queue, or a front that is behind while the pool queues."""
        if self.queue_full():
            starting = f", {self.starting} starting" if self.starting else ""
            if self.batchable:
                queued = (
                    f"{self.waiting_rows} rows queued (queue limit {self.settings.queue} batches of "
                    f"{self.settings.max_batch} rows, or what the workers drain within the queue timeout)"
                )
            else:
                queued = f"{self.waiting} requests queued (queue limit {self.settings.queue})"
            return errors.Overloaded(
                f"endpoint {self.key} is overloaded: {self.busy} workers busy{starting} and {queued}",
                retry_after=max(1.0, self.settings.timeout / 1000 / 2),
            )
        if self.waiting and self.sup.lag.behind:  # see node.supervisor.lag
            return errors.Overloaded(
                f"endpoint {self.key} is overloaded: the node's front is {self.sup.lag.lag_s * 1000:.0f} ms behind "
                f"and {self.waiting} requests are queued",
                retry_after=1.0,
            )
        return None

    def queue_full(self) -> bool:
        """One-request-at-a-time pools: `queue` requests may wait (Dataiku's meaning), plus
        one per worker starting. Batching pools: a worker takes up to `max_batch` queued
        rows per run, so `queue` counts batches: up to `queue * max_batch` rows may wait
        (plus a batch per worker starting), and fewer when the measured run time says the
        live workers could not drain them within `timeout` (the request would only time out)."""
        s = self.settings
        if not self.batchable:
            return self.waiting >= s.queue + self.starting
        if self.waiting_rows >= (s.queue + self.starting) * s.max_batch:
            return True
        # Then the drain time: every request asks, so the workers (a scan) are counted only
        # when one worker could not drain the queue within the timeout.
        drain_s = (self.waiting_rows + s.max_batch - 1) // s.max_batch * self.batch_s
        if drain_s < s.timeout / 1000:
            return False
        live = self.live
        return live > 0 and drain_s >= live * s.timeout / 1000

    async def submit(self, payload: Any, n: int = 1) -> Outcome:
        self.refuse_if_full()
        pend = Pending(payload, n, self._loop.create_future())
        if self.idle and self.waiting == 0:
            pend.done = True  # never queued
            self._dispatch(self.idle.pop(), [pend])
        else:
            self.queue.append(pend)
            self.waiting += 1
            self.waiting_rows += n
            pend.timer = self._loop.call_later(self.settings.timeout / 1000, self._expire, pend)
            if self._grow_after <= 0:
                self._grow()
            elif self._grow_handle is None:
                self._grow_handle = self._loop.call_later(self._grow_after, self._grow_if_still_waiting)
        try:
            return await pend.fut  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if not pend.done:  # still queued: the caller went away, free its place
                self._leave_queue(pend)
                self.stats.cancelled += 1
            raise

    def _leave_queue(self, pend: Pending) -> None:
        if not pend.done:
            pend.done = True
            self.waiting -= 1
            self.waiting_rows -= pend.n
            if pend.timer is not None:
                pend.timer.cancel()

    def _expire(self, pend: Pending) -> None:
        if pend.done:
            return
        self._leave_queue(pend)
        self.stats.timed_out += 1
        if not pend.fut.done():
            pend.fut.set_exception(
                errors.QueueTimeout(
                    f"waited {self.settings.timeout} ms in the queue of {self.key} without a free worker"
                )
            )
        self._check_drained()

    def _take_batch(self) -> list[Pending]:
        batch: list[Pending] = []
        rows = 0
        q = self.queue
        while q:
            pend = q[0]
            if pend.done:
                q.popleft()
                continue
            if batch and (not self.batchable or rows + pend.n > self.settings.max_batch):
                break
            q.popleft()
            self._leave_queue(pend)
            batch.append(pend)
            rows += pend.n
            if not self.batchable:
                break
        return batch

    def _dispatch(self, w: WorkerProcess, batch: list[Pending]) -> None:
        if self.batchable and len(batch) > 1:
            payload: Any = [row for pend in batch for row in pend.payload]
        else:
            payload = batch[0].payload
        try:
            fut = w.request(self.op, payload)
        except ChannelClosed:  # it is exiting: nothing was sent, so another worker takes it
            self._on_lost(w)
            self._requeue(batch)
            return
        w.state = "busy"
        t = time.perf_counter()
        if self.batchable and len(batch) > 1:
            self.stats.batches += 1
            self.stats.batched_rows += len(payload)
        limit = None
        if self.settings.max_run_ms:
            limit = self._loop.call_later(self.settings.max_run_ms / 1000, self._run_timeout, w)
        fut.add_done_callback(lambda f: self._on_result(w, batch, t, f, limit))

    def _requeue(self, batch: list[Pending]) -> None:
        """Puts requests that were never sent back at the head of the queue, each with the
        time it has left, then hands them to an idle worker or waits for one."""
        now = time.perf_counter()
        for pend in reversed(batch):
            if pend.fut.done():
                continue
            pend.done = False
            self.waiting += 1
            self.waiting_rows += pend.n
            self.queue.appendleft(pend)
            left = self.settings.timeout / 1000 - (now - pend.enqueued)
            pend.timer = self._loop.call_later(max(left, 0.0), self._expire, pend)
        while self.idle and self.waiting:
            self._worker_free(self.idle.pop())
        if self.waiting:
            self._grow()

    def _on_lost(self, w: WorkerProcess) -> None:
        """Its data channel closed: it takes nothing more; its exit is handled by _on_exit."""
        if w in self.idle:
            self.idle.remove(w)
        if w.state == "idle":
            w.state = "lost"
        if w.lost or w.retiring or self.closed:  # stopped by us: its exit follows
            return
        w.lost = True
        # It should be exiting; one that does not (it closed the channel itself) is ended.
        self._loop.call_later(_LOST_GRACE_S, _kill_if_alive, w, "closed its data channel without exiting")

    def _run_timeout(self, w: WorkerProcess) -> None:
        self.stats.run_timeouts += 1
        w.kill(f"the request ran past max_run_ms={self.settings.max_run_ms}")

    def _on_result(
        self,
        w: WorkerProcess,
        batch: list[Pending],
        dispatched: float,
        f: asyncio.Future[Any],
        limit: asyncio.TimerHandle | None,
    ) -> None:
        if limit is not None:
            limit.cancel()
        exc = f.exception()
        if exc is not None:
            if isinstance(exc, errors.WorkerCrashed) and w.kill_reason and "max_run_ms" in w.kill_reason:
                exc = errors.RunTimeout(
                    f"{self.key} ran past its run time limit of {self.settings.max_run_ms} ms; the worker was replaced"
                )
            self.stats.failed += len(batch)
            for pend in batch:
                if not pend.fut.done():
                    pend.fut.set_exception(exc)
        else:
            result, compute_us = f.result()
            if self.batchable:  # what one run costs, for the drain bound of queue_full
                run_s = time.perf_counter() - dispatched
                self.batch_s = run_s if self.batch_s == 0 else 0.9 * self.batch_s + 0.1 * run_s
            self.stats.served += len(batch)
            rows = sum(p.n for p in batch)
            if len(batch) == 1:
                pend = batch[0]
                if not pend.fut.done():
                    pend.fut.set_result(Outcome(result, int((dispatched - pend.enqueued) * 1e6), compute_us, rows))
            else:
                start = 0
                for pend in batch:
                    part = tuple(a[start : start + pend.n] for a in result)
                    start += pend.n
                    if not pend.fut.done():
                        wait = int((dispatched - pend.enqueued) * 1e6)
                        pend.fut.set_result(Outcome(part, wait, compute_us, rows))
            self.consecutive_crashes = 0
            w.tasks_done += 1
        if w.alive and w.sendable:
            self._worker_free(w)
        elif w.alive:
            w.state = "lost"

    def _worker_free(self, w: WorkerProcess) -> None:
        if not w.sendable:
            self._on_lost(w)
            return
        if self.closed and self.waiting == 0:
            w.state = "idle"
            self._check_drained()
            return
        if self.waiting == 0 and self.sup.should_yield(self):
            self._retire(w)
            return
        batch = self._take_batch()
        if batch:
            self._dispatch(w, batch)
            return
        w.state = "idle"
        w.idle_since = time.monotonic()
        self.idle.append(w)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.closed and self.waiting == 0 and self.busy == 0:
            self._drained.set()

    # ---- workers -----------------------------------------------------------------------
    def _spawn(self, *, floor: bool = False, loading: bool = False) -> WorkerProcess:
        nice = self.sup.worker_nice
        load_nice = min(nice + LOAD_NICE_EXTRA, 19) - nice if loading else 0
        w = WorkerProcess(self.key, self.spec, self._on_exit, nice=nice, load_nice=load_nice, on_lost=self._on_lost)
        w.epoch = self._crash_epoch
        self.workers.add(w)
        self.starting += 1
        if floor:
            self.sup.take_slot(self, floor=True)
        return w

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
            w.kill(self.last_error)
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
            self._grow()  # held back while no worker was live (see _grow)

    def _spawn_failed(self, w: WorkerProcess, cause: str) -> None:
        """No process was started: un-count it and retry with the crash back-off."""
        self.workers.discard(w)
        self.sup.release_slot(self)
        self.stats.spawn_failures += 1
        if self.closed or not self._started:  # at load, the failure fails the load instead
            return
        self.consecutive_crashes += 1
        self.last_error = f"cannot start a worker: {cause}"
        delay = self._back_off()
        log.error(
            "%s: cannot start a worker: %s; retrying in %.1f s (failure #%d in a row)",
            self.key,
            cause,
            delay,
            self.consecutive_crashes,
        )
        self._schedule_replenish(delay)

    def _back_off(self) -> float:
        n = self.consecutive_crashes
        delay = 0.0 if n <= 1 else min(0.1 * 2 ** (n - 2), _MAX_BACKOFF_S)
        self.backoff_until = time.monotonic() + delay
        return delay

    def _schedule_replenish(self, delay: float) -> None:
        if self._replenish_handle is not None:
            return
        if delay <= 0:
            self._replenish()  # at once: requests are waiting for it
        else:
            self._replenish_handle = self._loop.call_later(delay, self._replenish)

    def _launch(self, w: WorkerProcess) -> None:
        task = asyncio.create_task(self._start_worker(w))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged by _on_exit

    def _grow_if_still_waiting(self) -> None:
        self._grow_handle = None
        oldest = next((p for p in self.queue if not p.done), None)  # FIFO: the first live one
        if oldest is None:
            return
        if time.perf_counter() - oldest.enqueued >= self._grow_after:
            self._grow()
        else:
            delay = self._grow_after - (time.perf_counter() - oldest.enqueued)
            self._grow_handle = self._loop.call_later(delay, self._grow_if_still_waiting)

    def _grow(self) -> None:
        """Adds workers while requests wait and the pool is under `ceil` and the cap allows.
        Not while no worker is live and one is starting: the queue then measures the gap,
        not the load, and more processes starting on the same cores would only delay the
        first one."""
        if self.closed or time.monotonic() < self.backoff_until:
            return
        if self.starting and not self.live:
            return
        while self.waiting > self.starting and self.size < self.settings.ceil:
            if not self.sup.take_slot(self):
                return
            self._launch(self._spawn())

    def _replenish(self) -> None:
        self._replenish_handle = None
        if self.closed:
            return
        while self.size < self.settings.floor:
            self.stats.restarts += 1
            self._launch(self._spawn(floor=True))
        self._grow()

    def _retire(self, w: WorkerProcess) -> None:
        w.retiring = True
        if w in self.idle:
            self.idle.remove(w)
        asyncio.create_task(w.stop())  # noqa: RUF006 - _on_exit fires when it ends

    def _on_exit(self, w: WorkerProcess) -> None:
        self.workers.discard(w)
        if w in self.idle:
            self.idle.remove(w)
        self.sup.release_slot(self)
        if w.retiring or self.closed:
            self._check_drained()
            return
        reason = w.kill_reason or f"worker {w.label} {_exit_text(w)}"
        if w.kill_reason and "max_run_ms" in w.kill_reason:
            log.warning("%s: killed worker %s: %s", self.key, w.label, w.kill_reason)
            self.stats.restarts += 1
            self._launch(self._spawn(floor=True))  # takes the slot the killed one gave back
            return
        self.stats.crashed += 1
        # "In a row" means a crash loop: a worker started since the last crash (a
        # replacement) dies before serving anything. Others dying (siblings killed at once, a
        # worker that had served) start a new count.
        looping = w.tasks_done == 0 and w.epoch == self._crash_epoch
        self.consecutive_crashes = self.consecutive_crashes + 1 if looping else 1
        self._crash_epoch += 1
        self.last_error = reason
        delay = self._back_off()
        log.error(
            "%s: %s; replacing it in %.1f s (crash #%d in a row)",
            self.key,
            reason,
            delay,
            self.consecutive_crashes,
        )
        self._schedule_replenish(delay)

    def apply(self, settings: PoolSettings) -> None:
        """New settings on a live pool (tuning): grows to the new floor now; idle workers over
        the new ceil retire now, busy ones when they free up; cruise applies at the next tick."""
        self.settings = settings
        grow_ms = settings.grow_after_ms if settings.grow_after_ms is not None else (10 if self.batchable else 0)
        self._grow_after = grow_ms / 1000
        while self.size < settings.floor:
            self._launch(self._spawn(floor=True))
        for w in list(self.idle):
            if self.size <= settings.ceil:
                break
            self._retire(w)

    def park(self, parked: bool) -> None:
        """Parked (a warm generation kept for rollback), idle workers above `floor` retire
        after the grace period; unparked, the pool is back to `cruise`."""
        self.parked = parked

    def tick(self, now: float) -> None:
        """Periodic upkeep from the supervisor: retire idle workers above cruise, ping."""
        keep = self.settings.floor if self.parked else self.settings.cruise
        if self.waiting == 0 and self.size > keep:
            # One at a time, the longest idle first: a pool shrinks one worker per tick, so a
            # burst that comes back meanwhile finds the rest (hysteresis, not churn).
            grace = self.settings.idle_grace_ms / 1000
            oldest = min(self.idle, key=lambda w: w.idle_since, default=None)
            if oldest is not None and now - oldest.idle_since >= grace:
                self._retire(oldest)
        if self.waiting and self.starting < self.waiting and self._grow_handle is None:
            self._grow_if_still_waiting()

    def status(self) -> dict[str, Any]:
        states = [w.state for w in self.workers if not w.retiring]
        return {
            "ready": self.ready,
            "notReadyReason": self.not_ready_reason,
            "workers": {
                "busy": states.count("busy"),
                "idle": states.count("idle"),
                "starting": states.count("starting"),
                "total": len(states),
                "pids": sorted(w.pid for w in self.workers if w.pid is not None and not w.retiring),
            },
            "queueDepth": self.waiting,
            "queueRows": self.waiting_rows,
            "pool": self.settings.to_json(),
            **asdict(self.stats),
        }


def _kill_if_alive(w: WorkerProcess, reason: str) -> None:
    if w.alive:
        w.kill(reason)


def _exit_text(w: WorkerProcess) -> str:
    from node.supervisor.process import describe_exit

    return f"(pid {w.pid}) {describe_exit(w.exit_code)}"
