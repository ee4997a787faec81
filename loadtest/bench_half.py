"""`make bench`, the latency row: p50/p99 of HTTP ``predict`` at half of the node's capacity,
open loop (``--parts half``).

Capacity is measured first (the harness, closed loop, concurrency 16, fast HTTP); then the
harness offers half of it at a steady rate for SECONDS, latency counted from each request's
scheduled send time (a stall cannot hide). Issue 17 asks for p99 ≤ 2 ms for the logistic
regression. The row says whether the generator held its schedule: a late generator measures
itself, not the node.
"""

from __future__ import annotations

from typing import Any

from loadtest.bench_env import Counters
from loadtest.bench_runs import Bench, Model, harness_row, say, show
from loadtest.config import Target

SECONDS = 10.0
FACTOR = 0.5


def bench_half(m: Model, b: Bench, http: str, counters: Counters) -> dict[str, Any]:
    say(f"  HTTP predict at {FACTOR:g}x capacity, open loop, {SECONDS:g} s")
    t = Target(mode="http", url=http, service=m.service, endpoint=m.endpoint)
    cap = b.harness(t, m.bodies, duration=2 * b.duration, warmup=1.0)
    show("capacity (closed loop)", harness_row(cap))
    capacity = cap.result.ok_throughput
    rate = FACTOR * capacity
    counters.mark()
    half = b.harness(t, m.bodies, rate=rate, duration=SECONDS, warmup=1.0)
    row = harness_row(half)
    r = half.result
    row.update(
        {
            "tool": "harness (fast HTTP, open loop)",
            "capacity_rps": round(capacity, 1),
            "rate_rps": round(rate, 1),
            "seconds": SECONDS,
            "late_sends": r.late,
            "late_max_ms": round(r.late_max * 1000, 1),
            "dropped": r.dropped,
            "node_side": counters.delta(),
        }
    )
    show(f"{FACTOR:g}x capacity (open loop)", row)
    return row
