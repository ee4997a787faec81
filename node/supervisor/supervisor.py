"""The supervisor: owns every pool, the node-wide cap on worker processes, and upkeep.

Under the cap (`--max-workers`) every pool keeps its `floor`; the rest is shared: a pool
that wants to grow but cannot is queued for a slot, slots are granted round-robin, and a
pool holding more extra workers than a starved one (by two or more) gives one back when
it next frees up. A flood on one endpoint therefore never starves another.

The CPU budget (`cpus.detect`: the node's affinity and cgroup CPU quota, or
`--cpu-budget`) bounds the growth of prediction pools: their workers are CPU-bound (one
ONNX thread each), so past one busy worker per CPU another only splits the same cores and
adds context switches. A prediction pool therefore grows only while the prediction
workers that compete for the CPUs (its own, alive or starting, and the busy ones of other
prediction pools) are fewer than the budget; `floor`s are
always started, and `ceil` stays each pool's hard bound. Functions and SQL pools (which
mostly wait on I/O or sleep) are not counted.

A background task pings every worker each `ping_interval` and kills one whose pong is
late by `ping_timeout` (it is hung: a deadlock, C code holding the GIL, a stopped
process), and retires idle workers above `cruise`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from node.supervisor.cpus import CpuBudget
from node.supervisor.lag import LagMonitor
from node.supervisor.pool import Pool
from node.supervisor.settings import PoolSettings
from node.worker.spec import WorkerSpec

log = logging.getLogger("node.supervisor")


class Supervisor:
    def __init__(
        self,
        *,
        max_workers: int | None = None,
        ping_interval: float = 1.0,
        ping_timeout: float = 10.0,
        tick_interval: float = 0.25,
        worker_nice: int = 0,
        cpu_budget: CpuBudget | None = None,
        shed_lag_ms: int = 0,
    ) -> None:
        self.lag = LagMonitor(shed_lag_ms)  # pools that queue refuse while the front is behind
        self.max_workers = max_workers
        self.cpu_budget = cpu_budget  # None: prediction pools grow up to `ceil` (no budget)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.tick_interval = tick_interval
        self.worker_nice = worker_nice
        self.pools: dict[str, Pool] = {}
        self.total = 0  # worker processes alive or starting, all pools
        self._starved: dict[Pool, None] = {}  # insertion-ordered: round-robin
        self._task: asyncio.Task[None] | None = None
        self._last_ping = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._upkeep(), name="supervisor-upkeep")
        self.lag.start()

    async def add_pool(
        self,
        key: str,
        spec: WorkerSpec,
        settings: PoolSettings,
        *,
        op: str,
        batchable: bool,
        incoming: bool = False,
        size: int | None = None,
    ) -> Pool:
        """Creates a pool and starts its `floor` workers (or `size`, see Pool.start); raises
        if the endpoint cannot load. `incoming`: they load beside serving workers, at a
        lower priority."""
        pool = Pool(key, spec, settings, self, op=op, batchable=batchable, incoming=incoming)
        self.pools[key] = pool
        try:
            await pool.start(size)
        except BaseException:
            self.pools.pop(key, None)
            raise
        return pool

    async def remove_pool(self, pool: Pool, *, drain: bool = True) -> None:
        await pool.close(drain=drain)
        self.pools.pop(pool.key, None)
        self._starved.pop(pool, None)

    async def close(self) -> None:
        await self.lag.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(p.close(drain=False) for p in list(self.pools.values())))
        self.pools.clear()

    # ---- the node-wide cap -------------------------------------------------------------
    def prediction_workers(self) -> int:
        return sum(p.size for p in self.pools.values() if p.batchable and not p.closed)

    def cpu_room(self, pool: Pool) -> bool:
        """Whether `pool` may grow under the CPU budget (see the module docstring)."""
        if self.cpu_budget is None or not pool.batchable:
            return True
        # Its own workers, and the other prediction pools' busy ones: an idle worker of
        # another endpoint uses no CPU, and retires after its grace if it stays idle.
        others = sum(p.busy for p in self.pools.values() if p.batchable and p is not pool and not p.closed)
        return pool.size + others < self.cpu_budget.cpus

    def take_slot(self, pool: Pool, *, floor: bool = False) -> bool:
        # Growth of a started pool is held to the CPU budget; a pool's first workers (its
        # floor, or the size a rollout starts it at) are not.
        if not floor and pool._started and not self.cpu_room(pool):
            return False
        if floor or self.max_workers is None or self.total < self.max_workers:
            self.total += 1
            return True
        self._starved[pool] = None
        return False

    def release_slot(self, pool: Pool) -> None:
        self.total -= 1
        self._grant()

    def _wants(self, pool: Pool) -> bool:
        return (
            not pool.closed
            and pool.waiting > pool.starting
            and (pool.live > 0 or pool.starting == 0)  # a replacement first (see Pool._grow)
            and pool.size < pool.settings.ceil
            and time.monotonic() >= pool.backoff_until
            and self.cpu_room(pool)
        )

    def _grant(self) -> None:
        while self._starved and (self.max_workers is None or self.total < self.max_workers):
            pool = next(iter(self._starved))
            del self._starved[pool]
            if self._wants(pool):
                self.total += 1
                pool._launch(pool._spawn())
                if self._wants(pool):
                    self._starved[pool] = None  # back of the line

    def should_yield(self, pool: Pool) -> bool:
        """True when `pool` holds an extra worker a starved pool needs more."""
        if not self._starved or self.max_workers is None:
            return False
        extra = pool.size - pool.settings.floor
        if extra <= 0:
            return False
        needy = [p for p in self._starved if p is not pool and self._wants(p)]
        if not needy:
            return False
        return extra > min(p.size - p.settings.floor for p in needy) + 1

    # ---- upkeep ------------------------------------------------------------------------
    async def _upkeep(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self._tick()
            except Exception:  # upkeep must never die
                log.exception("supervisor upkeep failed")

    def _tick(self) -> None:
        now = time.monotonic()
        ping = now - self._last_ping >= self.ping_interval
        if ping:
            self._last_ping = now
        for pool in list(self.pools.values()):
            pool.tick(now)
            for w in list(pool.workers):
                if w.state == "starting" or w.retiring:
                    continue
                if w.ping_sent_at is not None and now - w.ping_sent_at > self.ping_timeout:
                    w.kill(f"stopped answering pings for {now - w.ping_sent_at:.1f} s (hung)")
                elif ping:
                    w.ping()
        self._grant()

    def status(self) -> dict[str, Any]:
        return {
            "maxWorkers": self.max_workers,
            "loopLagMs": round(self.lag.lag_s * 1000, 1),
            "shedLagMs": round(self.lag.shed_lag_s * 1000) or None,
            "cpuBudget": None
            if self.cpu_budget is None
            else {**self.cpu_budget.to_json(), "predictionWorkers": self.prediction_workers()},
            "workers": self.total,
            "pools": {k: p.status() for k, p in self.pools.items()},
        }
