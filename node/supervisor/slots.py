"""Worker slots: the node-wide cap on worker processes and the CPU budget, shared fairly.

A worker process holds a slot from the moment its pool creates it until it has exited
(retiring workers included): the slots taken are the workers the pools hold, counted in
one place (:attr:`Slots.taken`), never a separate counter that could drift. A pool asks
:meth:`Slots.may_start` before it adds a worker, and tells :meth:`Slots.released` when one
has gone.

Under the cap (`--max-workers`) every pool keeps its `floor`; the rest is shared: a pool
that wants to grow but cannot is queued for a slot, slots are granted round-robin, and a
pool holding more extra workers than a starved one (by two or more) gives one back when
it next frees up (:meth:`Slots.should_yield`). A flood on one endpoint therefore never
starves another.

The CPU budget (`cpus.detect`: the node's affinity and cgroup CPU quota, or
`--cpu-budget`) bounds the growth of prediction pools: their workers are CPU-bound (one
ONNX thread each), so past one busy worker per CPU another only splits the same cores and
adds context switches. A prediction pool therefore grows only while the prediction
workers that compete for the CPUs (its own, alive or starting, and the busy ones of other
prediction pools) are fewer than the budget; `floor`s are always started, and `ceil`
stays each pool's hard bound. Functions and SQL pools (which mostly wait on I/O or
sleep) are not counted.
"""

from __future__ import annotations

from typing import Protocol

from node.supervisor.cpus import CpuBudget


class SlotHolder(Protocol):
    """What the slots need to know of a pool, and the one thing they ask of it."""

    @property
    def held(self) -> int:
        """Worker processes it holds: alive or starting, retiring ones included."""

    @property
    def size(self) -> int:
        """Its workers alive or starting, not counting those retiring."""

    @property
    def busy(self) -> int: ...

    @property
    def floor(self) -> int: ...

    @property
    def cpu_bound(self) -> bool:
        """Its workers keep a CPU busy while they run (prediction pools)."""

    @property
    def started(self) -> bool:
        """Its first workers (its floor, or the size a rollout starts it at) are up."""

    @property
    def closed(self) -> bool: ...

    def wants_worker(self) -> bool:
        """Whether it would start a worker now if it had a slot (requests waiting, under
        `ceil`, not backing off after crashes)."""

    def add_worker(self) -> None:
        """Starts one worker on a slot granted to it."""


class Slots:
    def __init__(self, max_workers: int | None = None, cpu_budget: CpuBudget | None = None) -> None:
        self.max_workers = max_workers  # None: no cap
        self.cpu_budget = cpu_budget  # None: prediction pools grow up to `ceil` (no budget)
        self._pools: dict[SlotHolder, None] = {}
        self._starved: dict[SlotHolder, None] = {}  # insertion-ordered: round-robin

    def join(self, pool: SlotHolder) -> None:
        self._pools[pool] = None

    def leave(self, pool: SlotHolder) -> None:
        self._pools.pop(pool, None)
        self._starved.pop(pool, None)

    @property
    def taken(self) -> int:
        """Worker processes alive or starting, all pools."""
        return sum(p.held for p in self._pools)

    def prediction_workers(self) -> int:
        return sum(p.size for p in self._pools if p.cpu_bound and not p.closed)

    def cpu_room(self, pool: SlotHolder) -> bool:
        """Whether `pool` may grow under the CPU budget (see the module docstring)."""
        if self.cpu_budget is None or not pool.cpu_bound:
            return True
        # Its own workers, and the other prediction pools' busy ones: an idle worker of
        # another endpoint uses no CPU, and retires after its grace if it stays idle.
        others = sum(p.busy for p in self._pools if p.cpu_bound and p is not pool and not p.closed)
        return pool.size + others < self.cpu_budget.cpus

    def may_start(self, pool: SlotHolder, *, first: bool = False) -> bool:
        """Whether `pool` may add a worker now. `first`: one of its first workers, which
        neither the cap nor the budget hold back. Refused by the cap, the pool waits in
        line for a slot (granted through `add_worker`)."""
        if first:
            return True
        if pool.started and not self.cpu_room(pool):
            return False
        if self.max_workers is None or self.taken < self.max_workers:
            return True
        self._starved[pool] = None
        return False

    def released(self) -> None:
        """A worker has exited (or never started): its slot goes to a pool in line."""
        self.grant()

    def _wants(self, pool: SlotHolder) -> bool:
        return pool.wants_worker() and self.cpu_room(pool)

    def grant(self) -> None:
        while self._starved and (self.max_workers is None or self.taken < self.max_workers):
            pool = next(iter(self._starved))
            del self._starved[pool]
            if self._wants(pool):
                pool.add_worker()
                if self._wants(pool):
                    self._starved[pool] = None  # back of the line

    def should_yield(self, pool: SlotHolder) -> bool:
        """True when `pool` holds an extra worker a starved pool needs more."""
        if not self._starved or self.max_workers is None:
            return False
        extra = pool.size - pool.floor
        if extra <= 0:
            return False
        needy = [p for p in self._starved if p is not pool and self._wants(p)]
        if not needy:
            return False
        return extra > min(p.size - p.floor for p in needy) + 1

    def status(self) -> dict[str, object]:
        return {
            "maxWorkers": self.max_workers,
            "cpuBudget": None
            if self.cpu_budget is None
            else {**self.cpu_budget.to_json(), "predictionWorkers": self.prediction_workers()},
            "workers": self.taken,
        }
