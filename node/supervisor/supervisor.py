"""The supervisor: owns every pool, and the node-wide state they share.

It creates each pool with one :class:`~node.supervisor.pool.PoolContext`: the node's
worker :class:`~node.supervisor.slots.Slots` (the `--max-workers` cap and the CPU budget,
shared fairly: see that module), the front's :class:`~node.supervisor.lag.LagMonitor`,
and the workers' priority. Pools never see the supervisor; it uses them through their
public API (start, close, tick, status).

A background task ticks every pool each `tick_interval`: idle workers above `cruise`
retire, and, each `ping_interval`, every worker is pinged and one whose pong is late by
`ping_timeout` is killed (it is hung: a deadlock, C code holding the GIL, a stopped
process). Then slots freed meanwhile go to the pools waiting for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from node.supervisor.cpus import CpuBudget
from node.supervisor.lag import LagMonitor
from node.supervisor.pool import Pool, PoolContext
from node.supervisor.poolkey import PoolKey
from node.supervisor.process import Launcher, spawn_process
from node.supervisor.settings import PoolSettings
from node.supervisor.slots import Slots
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
        queue_target_ms: int = 0,
        launch: Launcher = spawn_process,
    ) -> None:
        self.lag = LagMonitor(shed_lag_ms)  # pools that queue refuse while the front is behind
        self.slots = Slots(max_workers, cpu_budget)
        self.context = PoolContext(
            self.slots, self.lag, worker_nice, ping_timeout, launch, queue_target=queue_target_ms / 1000
        )
        self.ping_interval = ping_interval
        self.tick_interval = tick_interval
        self.pools: dict[PoolKey, Pool] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_ping = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._upkeep(), name="supervisor-upkeep")
        self.lag.start()

    async def add_pool(
        self,
        key: PoolKey,
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
        pool = Pool(key, spec, settings, self.context, op=op, batchable=batchable, incoming=incoming)
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

    async def close(self) -> None:
        await self.lag.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(p.close(drain=False) for p in list(self.pools.values())))
        self.pools.clear()

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
            pool.tick(now, ping=ping)
        self.slots.grant()

    def status(self) -> dict[str, Any]:
        slots = self.slots.status()
        return {
            "maxWorkers": slots["maxWorkers"],
            "loopLagMs": round(self.lag.lag_s * 1000, 1),
            "shedLagMs": round(self.lag.shed_lag_s * 1000) or None,
            "queueTargetMs": round(self.context.queue_target * 1000) or None,
            "cpuBudget": slots["cpuBudget"],
            "workers": slots["workers"],
            "pools": {str(k): p.status() for k, p in self.pools.items()},
        }
