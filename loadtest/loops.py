"""The two ways of offering load: closed loop and open loop.

Closed loop: N clients, each sending its next request as soon as its previous answer
arrives. The offered load adapts to the server, which is why a closed loop cannot show a
stall: while the server sleeps, the clients wait instead of sending, and only one request
per client sees the pause (coordinated omission). Latency is measured from the send.

Open loop: requests are scheduled at fixed times (constant gaps or exponential gaps for a
Poisson arrival process) regardless of answers, and latency is measured from the
*scheduled* time, so queueing in a stalled server, and any lag of the generator itself,
shows in the figures. Sends that fall due together (after a timer wake-up, or a busy
moment) go out together. A bounded number may be in flight: a request that falls due
beyond the cap is counted as dropped by the generator.

Both loops return once every request they sent has its answer (or its timeout).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadtest.payloads import Picker
from loadtest.stats import LATE, Recorder
from loadtest.transport import Transport, error_key

_clock = time.perf_counter


@dataclass(frozen=True, slots=True)
class Bounds:
    """Stop sending after ``duration`` seconds or ``requests`` requests, the first reached."""

    duration: float | None = None
    requests: int | None = None


async def _call(transport: Transport, slot: int, index: int) -> str | None:
    try:
        return await transport.call(slot, index)
    except Exception as exc:  # a transport bug must not stop the run; it shows in the errors
        return error_key("client", exc)


async def closed_loop(transport: Transport, picker: Picker, rec: Recorder, *, clients: int, bounds: Bounds) -> None:
    """Runs ``clients`` clients until the bounds are reached and the last answers are in."""
    deadline = _clock() + bounds.duration if bounds.duration is not None else None
    budget = [bounds.requests]  # shared by the clients

    async def client(slot: int) -> None:
        while deadline is None or _clock() < deadline:
            left = budget[0]
            if left is not None:
                if left <= 0:
                    return
                budget[0] = left - 1
            rec.sent += 1
            t0 = _clock()
            error = await _call(transport, slot, picker.next())
            rec.record(error, _clock() - t0)

    await asyncio.gather(*(client(slot) for slot in range(clients)))


def _gaps(rate: float, poisson: bool, rng: random.Random) -> Callable[[], float]:
    if poisson:
        return lambda: rng.expovariate(rate)
    interval = 1.0 / rate
    return lambda: interval


async def open_loop(
    transport: Transport,
    picker: Picker,
    rec: Recorder,
    *,
    rate: float,
    bounds: Bounds,
    poisson: bool = False,
    max_inflight: int = 10_000,
    rng: random.Random | None = None,
    phase: float = 0.0,
) -> None:
    """Sends at ``rate`` per second until the bounds, then waits for the answers.

    ``phase`` delays the first send, so that processes sharing a constant rate interleave
    their sends instead of sending in bursts.
    """
    loop = asyncio.get_running_loop()
    gap = _gaps(rate, poisson, rng or random.Random())
    base = _clock()
    end = base + bounds.duration if bounds.duration is not None else None
    limit = bounds.requests
    inflight: set[asyncio.Task[None]] = set()

    async def one(slot: int, index: int, intended: float) -> None:
        error = await _call(transport, slot, index)
        rec.record(error, _clock() - intended)

    n = 0
    due = base + phase
    while (limit is None or n < limit) and (end is None or due < end):
        now = _clock()
        if due > now:
            await asyncio.sleep(due - now)
            continue
        behind = now - due
        if behind > LATE:
            rec.late += 1
            if behind > rec.late_max:
                rec.late_max = behind
        if len(inflight) >= max_inflight:
            rec.dropped += 1
        else:
            rec.sent += 1
            task = loop.create_task(one(n, picker.next(), due))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        n += 1
        due += gap()
    if inflight:
        await asyncio.wait(inflight)
