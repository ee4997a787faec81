"""How far the front's event loop is behind: the admission signal for a saturated front.

Every request the front takes in costs it CPU (accept, parse, decode, queue, encode). Past
capacity the event loop falls behind, and the excess waits in socket buffers, where no
queue timer runs: answers (served or refused) come later and later. The loop's lag — how
late a short sleep wakes up — measures that directly. While the front is behind (late at
most samples of the last two seconds: saturated, not stalled once), a pool
that is already queueing refuses new requests at once (`Pool.refuse_if_full`), before their
bodies are decoded or enriched: refusing is far cheaper than serving, so the front catches
up instead of falling further behind (the "shed on event-loop lag" policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

TICK_S = 0.05  # how often the lag is sampled
WINDOW_S = 2.0  # the lag reported is the lower median of the samples of this last window
MIN_SAMPLES = 3  # a single stall (a pause of the process, a slow load) is not saturation


class LagMonitor:
    def __init__(self, shed_lag_ms: int) -> None:
        self.shed_lag_s = shed_lag_ms / 1000  # 0: never shed on lag
        self.lag_s = 0.0  # the lower median of the last WINDOW_S's samples
        self._samples: list[tuple[float, float]] = []  # (when, lag)
        self._task: asyncio.Task[None] | None = None

    @property
    def behind(self) -> bool:
        """Sustained lag: most samples of the window at least `shed_lag_ms` late. A
        saturated loop is late at every sample; one that stalled once is late at one."""
        return self.shed_lag_s > 0 and len(self._samples) >= MIN_SAMPLES and self.lag_s >= self.shed_lag_s

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(self, now: float, lag: float) -> None:
        self._samples.append((now, lag))
        while self._samples and now - self._samples[0][0] > WINDOW_S:
            self._samples.pop(0)
        lags = sorted(s[1] for s in self._samples)
        self.lag_s = lags[(len(lags) - 1) // 2]

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.record(now, max(0.0, now - t - TICK_S))
