"""A pool of worker processes for one endpoint of one generation: its queue and dispatch.

Requests go straight to an idle worker; when none is idle they wait in a FIFO queue, each
with a timer of `timeout` ms. What `queue` bounds depends on the endpoint kind (see
`queue_full`): requests for one-request-at-a-time pools (functions, SQL), batches of up
to `max_batch` rows for prediction pools, whose workers drain a whole batch per run.

Batching: when a worker frees up, a prediction pool sends it everything queued (up to
`max_batch` rows) as one message and one model run; nothing waits for a batch to fill.
A batch too big for one frame is split (its first request goes alone); a single request
too big for one is refused with PayloadTooLarge.

The pool is built from its collaborators: its workers' lifecycle is
:class:`~node.supervisor.crew.Crew` (spawn, replace, retire), whose growth and back-off
follow :class:`~node.supervisor.scaling.Scaling`; node-wide it shares
:class:`~node.supervisor.slots.Slots` (the worker cap, the CPU budget) and the front's
:class:`~node.supervisor.lag.LagMonitor` (shedding while the front is behind), both in
its :class:`PoolContext`. Over `max_run_ms` a worker is killed and replaced, and its
callers get RunTimeout; a worker that dies fails only the requests it held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from node import errors
from node.supervisor.crew import Crew, PoolContext, PoolStats
from node.supervisor.poolkey import PoolKey
from node.supervisor.process import ChannelClosed, KillReason, WorkerProcess
from node.supervisor.settings import PoolSettings
from node.worker import protocol as p
from node.worker.spec import WorkerSpec

__all__ = ["Outcome", "Pool", "PoolContext", "PoolStats"]
log = logging.getLogger("node.supervisor")
# A batching queue is standing when no request dispatched during this long waited less than
# the node's queue target (CoDel's test: a burst drains within it, an overload does not).
STANDING_INTERVAL_S = 0.1
PREPARED_S = 0.02  # how long an early refusal's answer (and the counts in its message) is reused


class _Pending:
    __slots__ = ("done", "enqueued", "fut", "n", "payload", "timer")

    def __init__(self, payload: Any, n: int, fut: asyncio.Future[Outcome]) -> None:
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


class Pool(Crew):
    def __init__(
        self,
        key: PoolKey,
        spec: WorkerSpec,
        settings: PoolSettings,
        node: PoolContext,
        *,
        op: str,
        batchable: bool,
        incoming: bool = False,
    ) -> None:
        super().__init__(key, spec, settings, node, batchable=batchable, incoming=incoming)
        self.op = op
        self.batchable = batchable
        self.queue: deque[_Pending] = deque()
        self.batch_s = 0.0  # moving average of one model run, as the front sees it (s)
        # The standing-queue test (queue_full): the shortest wait of the requests dispatched
        # in the current interval, when that interval ends, and the verdict of the last one.
        self.standing = False
        self._refused_standing = False  # the standing rule refused a request this interval
        # HTTP requests the front let in from their bytes (DataPlane.admit_early), from their
        # arrival until their answer: what is on its way to the queue, not only what is in it.
        self.front_admitted = 0
        self._memo: tuple[float, str, errors.Overloaded] | None = None  # see _prepared
        self._least_wait = float("inf")
        self._interval_end = 0.0
        self._grow_handle: asyncio.TimerHandle | None = None

    # ---- requests ----------------------------------------------------------------------
    def refuse_if_full(self) -> None:
        """Raises what `submit` would raise at once (shutting down, not ready after crashes,
        queue full), so that a caller can be refused before anything is spent decoding or
        enriching its request."""
        if self.closed:
            raise errors.ShuttingDown(f"endpoint {self.key} is not taking requests")
        if self.idle and self.waiting == 0:
            return
        if self.scaling.crash_looping and not self.ready:
            raise errors.NotReady(f"endpoint {self.key} is not ready: {self.not_ready_reason}")
        kind = self._overload_kind()  # first: on every call, and its common answer (None) is cheap
        if kind is None:
            return
        if self.live == 0 and self.coming > 0:
            # Waiting for a worker that is starting (a replacement, or the pool's first): not
            # overload. The queue timeout bounds the wait, the servers' connection and stream
            # limits bound how many wait.
            return
        self.stats.rejected += 1
        raise self._refusal(kind)

    def overload(self) -> errors.Overloaded | None:
        """The Overloaded that `refuse_if_full` would raise now, built but neither raised nor
        counted, or None (including when it would raise something else: shutting down, not
        ready). The HTTP fast refusal (node.http.refuse) asks before reading the body."""
        if self.closed or (self.idle and self.waiting == 0):
            return None
        if self.scaling.crash_looping and not self.ready:
            return None
        kind = self._overload_kind()
        if kind is None or (self.live == 0 and self.coming > 0):
            return None
        return self._prepared(kind)

    def _overload_kind(self) -> str | None:
        """Overload: a full queue, or a front that is behind while the pool queues."""
        if self.queue_full():
            return "full"
        if self.waiting and self.node.lag.behind:  # see node.supervisor.lag
            return "lag"
        return None

    def _prepared(self, kind: str) -> errors.Overloaded:
        """The refusal of `kind` built at most PREPARED_S ago, its counts that old: refusals
        decided before a request is parsed (a flood of them) share one, not one per request."""
        now = time.monotonic()
        memo = self._memo
        if memo is not None and memo[1] == kind and now - memo[0] < PREPARED_S:
            return memo[2]
        refusal = self._refusal(kind)
        self._memo = (now, kind, refusal)
        return refusal

    def _refusal(self, kind: str) -> errors.Overloaded:
        if kind == "full":
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
        if kind == "lag":
            return errors.Overloaded(
                f"endpoint {self.key} is overloaded: the node's front is {self.node.lag.lag_s * 1000:.0f} ms behind "
                f"and {self.waiting} requests are queued",
                retry_after=1.0,
            )
        return errors.Overloaded(
            f"endpoint {self.key} is overloaded: {self.busy} workers busy and {self.front_admitted} requests "
            f"in the node (the queue stands: its requests waited over {self.node.queue_target * 1000:g} ms)",
            retry_after=1.0,
        )

    def front_overload(self) -> errors.Overloaded | None:
        """While the queue stands, the requests the front has let in (arrived, being parsed
        or enriched, queued or running: `front_admitted`) are held to two batches per live
        worker, one running and one waiting. The front takes in a whole loop iteration of
        arrivals before any reaches the queue, so the queue alone would say "room" to every
        one of them, and all but a batch would then be refused the costly way."""
        if not self.standing:
            return None
        s = self.settings
        if self.front_admitted < 2 * s.max_batch * max(1, self.live):
            return None
        self._refused_standing = True
        return self._prepared("front")

    def front_done(self) -> None:
        """A request `front_admitted` counted has been answered."""
        self.front_admitted -= 1

    def queue_full(self) -> bool:
        """One-request-at-a-time pools: `queue` requests may wait (Dataiku's meaning), plus
        one per worker starting. Batching pools: a worker takes up to `max_batch` queued
        rows per run, so `queue` counts batches: up to `queue * max_batch` rows may wait
        (plus a batch per worker starting), and fewer when the measured run time says the
        live workers could not drain them within `timeout` (the request would only time out).

        And when the queue stands (`standing`: for a whole STANDING_INTERVAL_S, every request
        dispatched had waited longer than the node's `--queue-target-ms`), only one batch
        per worker may wait: the workers stay busy, a request waits about one run, and the
        excess is refused at once instead of waiting its timeout out. A closed loop of
        callers, or a burst, does not stand: its queue drains below the target."""
        s = self.settings
        if not self.batchable:
            return self.waiting >= s.queue + self.starting
        if self.waiting_rows >= (s.queue + self.starting) * s.max_batch:
            return True
        if self.standing and self.waiting_rows >= (self.live + self.starting) * s.max_batch:
            self._refused_standing = True
            return True  # more arrives than the workers drain: a longer queue would only add wait
        # Then the drain time: every request asks, so the workers (a scan) are counted only
        # when one worker could not drain the queue within the timeout.
        drain_s = (self.waiting_rows + s.max_batch - 1) // s.max_batch * self.batch_s
        if drain_s < s.timeout / 1000:
            return False
        live = self.live
        return live > 0 and drain_s >= live * s.timeout / 1000

    async def submit(self, payload: Any, n: int = 1) -> Outcome:
        """Runs one request (`n` rows for a batching pool) on a worker, queueing it while
        none is free; raises the ApiNodeError it failed with."""
        self.refuse_if_full()
        pend = _Pending(payload, n, self._loop.create_future())
        if self.idle and self.waiting == 0:
            pend.done = True  # never queued
            self._dispatch(self.idle.pop(), [pend])
        else:
            self.queue.append(pend)
            self.waiting += 1
            self.waiting_rows += n
            pend.timer = self._loop.call_later(self.settings.timeout / 1000, self._expire, pend)
            if self.scaling.grow_after <= 0:
                self.grow()
            elif self._grow_handle is None:
                self._grow_handle = self._loop.call_later(self.scaling.grow_after, self._grow_if_still_waiting)
        try:
            return await pend.fut
        except asyncio.CancelledError:
            if not pend.done:  # still queued: the caller went away, free its place
                self._leave_queue(pend)
                self.stats.cancelled += 1
            raise

    def _leave_queue(self, pend: _Pending) -> None:
        if not pend.done:
            pend.done = True
            self.waiting -= 1
            self.waiting_rows -= pend.n
            if pend.timer is not None:
                pend.timer.cancel()

    def _expire(self, pend: _Pending) -> None:
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

    def _fail_queued(self, exc: errors.ApiNodeError) -> None:
        while self.queue:
            pend = self.queue.popleft()
            self._leave_queue(pend)
            if not pend.fut.done():
                pend.fut.set_exception(exc)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
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
        if batch and self.batchable:
            now = time.perf_counter()
            self._waited(now, now - batch[-1].enqueued if self.waiting else 0.0)  # the newest waited least
        return batch

    def _waited(self, now: float, wait: float) -> None:
        """The standing-queue test, fed with the least wait of each dispatched batch (0 when
        the queue emptied). While standing, the queue is held short, so its waits stay short:
        it stands on as long as requests are being refused for it (more arrives than it
        admits), and ends when a worker finds the queue empty (`_worker_free`)."""
        target = self.node.queue_target
        if target <= 0:
            return
        if wait < self._least_wait:
            self._least_wait = wait
        if now >= self._interval_end:
            self.standing = self._refused_standing or self._least_wait > target
            self._refused_standing = False
            self._least_wait = float("inf")
            self._interval_end = now + STANDING_INTERVAL_S

    def _dispatch(self, w: WorkerProcess, batch: list[_Pending]) -> None:
        if self.batchable and len(batch) > 1:
            payload: Any = [row for pend in batch for row in pend.payload]
        else:
            payload = batch[0].payload
        try:
            fut = w.request(self.op, payload)
        except ChannelClosed:  # it is exiting: nothing was sent, so another worker takes it
            self.on_lost(w)
            self._requeue(batch)
            return
        except p.FrameTooLarge as exc:  # nothing was sent
            if len(batch) > 1:  # the batch is too big, maybe not its requests: one alone
                self._requeue(batch[1:])
                self._dispatch(w, batch[:1])
                return
            if not batch[0].fut.done():
                batch[0].fut.set_exception(errors.PayloadTooLarge(f"the request is {exc}"))
            self._worker_free(w)
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

    def _requeue(self, batch: list[_Pending]) -> None:
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
            self.grow()

    def _run_timeout(self, w: WorkerProcess) -> None:
        self.stats.run_timeouts += 1
        w.kill(KillReason.RUN_TIMEOUT, f"the request ran past max_run_ms={self.settings.max_run_ms}")

    def _on_result(
        self,
        w: WorkerProcess,
        batch: list[_Pending],
        dispatched: float,
        f: asyncio.Future[p.Result],
        limit: asyncio.TimerHandle | None,
    ) -> None:
        if limit is not None:
            limit.cancel()
        exc = f.exception()
        if exc is not None:
            if isinstance(exc, errors.WorkerCrashed) and w.kill_reason is KillReason.RUN_TIMEOUT:
                exc = errors.RunTimeout(
                    f"{self.key} ran past its run time limit of {self.settings.max_run_ms} ms; the worker was replaced"
                )
            self.stats.failed += len(batch)
            for pend in batch:
                if not pend.fut.done():
                    pend.fut.set_exception(exc)
        else:
            res = f.result()
            result, compute_us = res.payload, res.compute_us
            if self.batchable:  # what one run costs, for the drain bound of queue_full
                run_s = time.perf_counter() - dispatched
                self.batch_s = run_s if self.batch_s == 0 else 0.9 * self.batch_s + 0.1 * run_s
            self.stats.served += len(batch)
            rows = sum(pend.n for pend in batch)
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
            self.scaling.served()
            w.tasks_done += 1
        if w.alive and w.sendable:
            self._worker_free(w)
        elif w.alive:
            w.state = "lost"

    def _worker_free(self, w: WorkerProcess) -> None:
        if not w.sendable:
            self.on_lost(w)
            return
        if self.closed and self.waiting == 0:
            w.state = "idle"
            self._check_drained()
            return
        if self.waiting == 0 and self.node.slots.should_yield(self):
            self.retire(w)
            return
        batch = self._take_batch()
        if batch:
            self._dispatch(w, batch)
            return
        w.state = "idle"
        w.idle_since = time.monotonic()
        self.idle.append(w)
        self.standing = False  # a worker found the queue empty: it drains
        self._check_drained()

    # ---- growth timing -----------------------------------------------------------------
    def _grow_if_still_waiting(self) -> None:
        self._grow_handle = None
        oldest = next((pend for pend in self.queue if not pend.done), None)  # FIFO: the first live one
        if oldest is None:
            return
        delay = self.scaling.grow_delay(time.perf_counter() - oldest.enqueued)
        if delay <= 0:
            self.grow()
        else:
            self._grow_handle = self._loop.call_later(delay, self._grow_if_still_waiting)

    def tick(self, now: float, *, ping: bool = False) -> None:
        """Periodic upkeep (the supervisor's): retires an idle worker above `cruise`, grows
        for requests that waited long enough, pings workers and kills hung ones."""
        super().tick(now, ping=ping)
        if self.waiting and self.starting < self.waiting and self._grow_handle is None:
            self._grow_if_still_waiting()

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "notReadyReason": self.not_ready_reason,
            "workers": {**self.counts().to_json(), "pids": self.pids()},
            "queueDepth": self.waiting,
            "queueRows": self.waiting_rows,
            "queueStanding": self.standing,
            "frontAdmitted": self.front_admitted,
            "pool": self.settings.to_json(),
            **asdict(self.stats),
        }
