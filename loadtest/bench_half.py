"""`make bench`, the latency row: p50/p99 of HTTP ``predict`` at half of the node's capacity,
open loop (``--parts half``).

Capacity is measured first as the throughput rows measure it (wrk, closed loop, 32
connections, one body); then openloop (:mod:`loadtest.openloop`, a C generator) offers half
of it at a steady rate for SECONDS after WARMUP, cycling through the model's bodies, latency
counted from each request's scheduled send time (a stall cannot hide). Issue 17 asks for p99
≤ 2 ms for the logistic regression. The row says whether the generator held its schedule
(sends more than 1 ms / 10 ms late, the latest): a late generator's lateness is in the figures.
"""

from __future__ import annotations

from typing import Any

import orjson

from loadtest import bench_tools as tools
from loadtest import openloop
from loadtest.bench_env import Counters
from loadtest.bench_runs import Bench, Model, say, show
from loadtest.config import Target

SECONDS = 10.0
WARMUP = 1.0
FACTOR = 0.5
TARGET_P99_MS = 2.0  # issue 17, for the logistic regression
CAPACITY_CONNECTIONS = 32  # as the throughput rows' reference (wrk -c32)


def capacity(url: str, m: Model, b: Bench) -> tools.ToolRun:
    """wrk, closed loop, CAPACITY_CONNECTIONS connections, the model's first body."""
    return tools.wrk(
        url,
        orjson.dumps(m.bodies[0]),
        concurrency=CAPACITY_CONNECTIONS,
        duration=2 * b.duration,
        work=b.work,
        cpus=b.gen_cpus,
    )


def bench_half(m: Model, b: Bench, http: str, counters: Counters, floor: str | None = None) -> dict[str, Any]:
    """The node's row; with ``floor`` (the bare aiohttp floor's base URL), the floor's latency at
    the same rate beside it: what the machine and the generator leave of the target."""
    say(f"  HTTP predict at {FACTOR:g}x capacity, open loop (openloop), {SECONDS:g} s")
    url = Target(mode="http", url=http, service=m.service, endpoint=m.endpoint).http_url()
    cap = capacity(url, m, b)
    show("capacity (wrk -c32)", cap.row())
    if cap.failed or not cap.throughput:
        return {"tool": "openloop", "failed": f"no capacity to take half of: {cap.failed}", "throughput": 0.0}
    rate = FACTOR * cap.throughput
    bodies = [orjson.dumps(body) for body in m.bodies]

    def offer(target: str) -> openloop.OpenLoop:
        return openloop.run(target, bodies, rate=rate, duration=SECONDS, warmup=WARMUP, work=b.work, cpus=b.gen_cpus)

    counters.mark()
    half = offer(url)
    row = half.row()
    row.update(
        {
            "capacity_rps": round(cap.throughput, 1),
            "capacity_tool": f"wrk -c{CAPACITY_CONNECTIONS}",
            "rate_rps": round(rate, 1),
            "seconds": SECONDS,
            "node_side": counters.delta(),
        }
    )
    show(f"{FACTOR:g}x capacity (open loop)", row)
    if floor is not None:
        floor_url = Target(mode="http", url=floor, service=m.service, endpoint=m.endpoint).http_url()
        row["floor"] = offer(floor_url).row()
        show("floor at the same rate", row["floor"])
    if half.failed:
        return row
    say(
        f"   generator: sends > 1 ms late {row['late_sends_1ms']:,}, > 10 ms {row['late_sends']:,}, "
        f"latest {row['late_max_ms']} ms (p99 {row['late_p99_ms']} ms); connections {row['connections_opened']}; "
        f"served p90 {row['latency_ms']['p90']} p99.9 {row['latency_ms']['p99.9']} max {row['latency_ms']['max']} ms; "
        f"from the send (without the generator's lateness) p50 {row['from_send_ms']['p50']} p99 {row['from_send_ms']['p99']} ms"
    )
    return row
