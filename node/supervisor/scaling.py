"""A pool's scaling policy: when it grows, when a worker retires, how it backs off.

The pool (:mod:`node.supervisor.pool`) owns the processes and the timers; it asks this
policy what to do from plain numbers (requests waiting, workers starting, live, held),
and tells it what happened (a request served, a crash, a failed spawn). The policy is
pure: no process, no event loop, so every rule below is tested directly.

- Grow while requests wait, one worker per waiting request not already covered by a
  worker starting, up to `ceil`, once the oldest request has waited `grow_after_ms`
  (default 0 for one-request-at-a-time pools, 10 ms for batching pools, whose batching
  drains short queues better than a new process competing for the same cores would).
  Not while no worker is live and one is starting: the queue then measures the gap, not
  the load, and more processes starting on the same cores would only delay the first.
- Retire one idle worker at a time, the longest idle, once it has idled `idle_grace_ms`,
  while the pool is above `cruise` (`floor` when parked) and nothing waits: a burst that
  comes back finds the rest (hysteresis, not churn).
- Crashes in a row back off exponentially (0, 0.1, 0.2, 0.4 ... 10 s). "In a row" means
  a crash loop: a worker started since the last crash (a replacement) dies before serving
  anything. Others dying (siblings killed at once, a worker that had served) start a new
  count. Two in a row make the endpoint refuse at once, and not ready, until one serves.
"""

from __future__ import annotations

from node.supervisor.settings import PoolSettings

MAX_BACKOFF_S = 10.0


class Scaling:
    def __init__(self, settings: PoolSettings, *, batching: bool) -> None:
        self.batching = batching
        self.settings = settings
        self.grow_after = 0.0  # s a request waits before the pool grows for it
        self.apply(settings)
        self.parked = False  # a warm generation kept for rollback: `floor` workers, no more
        self.consecutive_crashes = 0
        self.crash_epoch = 0  # crashes so far: a worker records it when it starts
        self.backoff_until = 0.0  # time.monotonic() before which the pool does not grow

    def apply(self, settings: PoolSettings) -> None:
        self.settings = settings
        grow_ms = settings.grow_after_ms if settings.grow_after_ms is not None else (10 if self.batching else 0)
        self.grow_after = grow_ms / 1000

    # ---- growth ------------------------------------------------------------------------
    def backing_off(self, now: float) -> bool:
        return now < self.backoff_until

    def growth(self, now: float, *, waiting: int, starting: int, live: int, size: int) -> int:
        """How many workers to add now (before the node-wide cap and CPU budget)."""
        if self.backing_off(now) or (starting and not live):
            return 0
        return max(0, min(waiting - starting, self.settings.ceil - size))

    def grow_delay(self, waited: float) -> float:
        """Seconds until a request that has waited `waited` s justifies growing (0: now)."""
        return max(0.0, self.grow_after - waited)

    def missing(self, size: int) -> int:
        """Workers to start now to be back at `floor` (after crashes, a new setting)."""
        return max(0, self.settings.floor - size)

    # ---- shrinking ---------------------------------------------------------------------
    @property
    def keep(self) -> int:
        """Workers kept while idle."""
        return self.settings.floor if self.parked else self.settings.cruise

    def retire_idle(self, now: float, *, waiting: int, size: int, idle_since: float) -> bool:
        """Whether the longest-idle worker (idle since `idle_since`) retires now."""
        if waiting or size <= self.keep:
            return False
        return now - idle_since >= self.settings.idle_grace_ms / 1000

    def over_ceil(self, size: int) -> int:
        """Workers to retire after `ceil` was lowered (idle ones now, busy ones later)."""
        return max(0, size - self.settings.ceil)

    # ---- faults ------------------------------------------------------------------------
    @property
    def crash_looping(self) -> bool:
        """Crashes in a row: the endpoint refuses at once rather than queue for a worker."""
        return self.consecutive_crashes >= 2

    def replacing(self, *, served_once: bool, coming: int) -> bool:
        """No live worker, but a replacement for one that just died is starting: requests
        wait for it (a single crash is not an outage; repeated ones are)."""
        return served_once and self.consecutive_crashes <= 1 and coming > 0

    def served(self) -> None:
        self.consecutive_crashes = 0

    def crashed(self, now: float, *, served_any: bool, epoch: int) -> float:
        """A worker started at crash count `epoch` died; returns the delay before its
        replacement."""
        looping = not served_any and epoch == self.crash_epoch
        self.consecutive_crashes = self.consecutive_crashes + 1 if looping else 1
        self.crash_epoch += 1
        return self._back_off(now)

    def spawn_failed(self, now: float) -> float:
        """No process could be started; returns the delay before trying again."""
        self.consecutive_crashes += 1
        return self._back_off(now)

    def _back_off(self, now: float) -> float:
        n = self.consecutive_crashes
        delay = 0.0 if n <= 1 else min(0.1 * 2 ** (n - 2), MAX_BACKOFF_S)
        self.backoff_until = now + delay
        return delay
