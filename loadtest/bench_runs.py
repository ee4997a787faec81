"""How the benchmark suite takes one measurement, and how it compares two servers.

:meth:`Bench.harness` runs apinode's own generator in this process, pinned to the
generator's cores, and notes the CPU the process really spent (:class:`Measured`): the
self-check counts time spent *waiting* for a CPU as busy too, which on a shared machine
tells "starved by other jobs" from "bound by its own work" only with both figures.
Every measurement becomes a row (a plain dict: tool, throughput, p50/p99, errors, the
generator's CPU and whether it was saturated), whichever tool took it.

:func:`compare` measures the floor and the node alternately, ``rounds`` times, so that a
burst of noise on the shared machine hits one round of each rather than one side, and
keeps each side's best round (the least disturbed) with every round's figures and ratios.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.bench_env import BENCH_ADMIN_KEY
from loadtest.config import LoadConfig, Target
from loadtest.result import LoadResult
from loadtest.runner import run

Row = dict[str, Any]
APINODE = str(Path(sys.executable).parent / "apinode")


@dataclass(frozen=True, slots=True)
class Model:
    """A packaged prediction endpoint and the request bodies to send it."""

    name: str
    package: Path
    service: str
    endpoint: str
    bodies: list[Any]


@dataclass(frozen=True, slots=True)
class Measured:
    """A harness run and its process's own CPU time over its wall time."""

    result: LoadResult
    own_cpu: float


@dataclass(frozen=True, slots=True)
class Bench:
    """Where things run and for how long."""

    work: Path
    duration: float  # seconds per round
    rounds: int
    warmup: float
    concurrency: int
    server_pin: list[str]
    gen_cpus: tuple[int, ...] | None

    def harness(self, target: Target, bodies: list[Any], **kw: Any) -> Measured:
        kw.setdefault("concurrency", self.concurrency)
        kw.setdefault("duration", self.duration)
        kw.setdefault("warmup", self.warmup)
        cfg = LoadConfig(target=target, bodies=tuple(bodies), cpus=self.gen_cpus, **kw)
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        r = run(cfg)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return Measured(r, cpu / wall if wall > 0 else 0.0)

    def node_cmd(self, data: Path, ports: Path, package: Path) -> list[str]:
        """``apinode serve`` of ``package``, pinned, on free ports written to ``ports``."""
        ports_args = ["--http-port", "0", "--grpc-port", "0", "--ports-file", str(ports)]
        key = ["--admin-key", BENCH_ADMIN_KEY]
        return [*self.server_pin, APINODE, "serve", "--data-dir", str(data), *ports_args, *key, str(package)]


def harness_row(m: Measured, per_request: int = 1) -> Row:
    r = m.result
    return {
        "tool": "harness",
        "throughput": round(r.ok_throughput * per_request, 1),
        "p50_ms": r.ok_latency.percentile_ms(50),
        "p99_ms": r.ok_latency.percentile_ms(99),
        "ok": r.ok,
        "errors": dict(r.errors),
        "generator_cpu": round(max(r.cpu + r.cpu_peak, default=0.0), 3),
        "generator_own_cpu": round(m.own_cpu, 3),
        "generator_saturated": r.saturated,
        "warnings": r.warnings(),
    }


def ratio(node: Row, floor: Row) -> float | None:
    if node.get("failed") or floor.get("failed") or not floor["throughput"]:
        return None
    return round(float(node["throughput"]) / float(floor["throughput"]), 3)


def say(text: str) -> None:
    print(text, flush=True)


def show(label: str, row: Row) -> None:
    """One line per measurement on the terminal, as it finishes."""
    if row.get("failed"):
        say(f"   {label:<24} {row['tool']:<8} failed: {row['failed']}")
        return
    p50, p99 = row["p50_ms"], row["p99_ms"]
    lat = f"p50 {p50:6.2f} ms  p99 {p99:7.2f} ms" if p50 is not None and p99 is not None else "no answers"
    own = f" (own {row['generator_own_cpu']:.0%})" if "generator_own_cpu" in row else ""
    errs = f"  errors {row['errors']}" if row["errors"] else ""
    if row.get("requests_per_run"):
        errs += f"  node: {row['requests_per_run']} req/model run"
    flag = "  GENERATOR SATURATED" if row.get("generator_saturated") else ""
    say(
        f"   {label:<24} {row['tool']:<8} {row['throughput']:>9,.0f}/s  {lat}  "
        f"gen cpu {row['generator_cpu']:.0%}{own}{errs}{flag}"
    )


def _best(rows: list[Row]) -> Row:
    def score(r: Row) -> float:
        return -1.0 if r.get("failed") else float(r["throughput"])

    top: Row = max(rows, key=score)
    best: Row = dict(top)
    best["rounds"] = [None if r.get("failed") else r["throughput"] for r in rows]
    best["generator_saturated_rounds"] = sum(1 for r in rows if r.get("generator_saturated"))
    return best


def compare(label: str, floor: Callable[[], Row], node: Callable[[], Row], rounds: int) -> dict[str, Any]:
    """Floor, node, floor, node, ...: each side's best round, the ratio of the bests, and
    the ratio of each round."""
    got: dict[str, list[Row]] = {"floor": [], "node": []}
    for i in range(rounds):
        for who, measure in (("floor", floor), ("node", node)):
            row = measure()
            got[who].append(row)
            show(f"{label} {who} #{i + 1}", row)
    out: dict[str, Any] = {who: _best(rows) for who, rows in got.items()}
    out["ratio"] = ratio(out["node"], out["floor"])
    per_round = [ratio(n, f) for f, n in zip(got["floor"], got["node"], strict=True)]
    out["round_ratios"] = per_round
    cost = {who: _median_cost(rows) for who, rows in got.items()}
    out["cpu_us_per_req"] = cost
    f_cost, n_cost = cost["floor"], cost["node"]
    out["cpu_ratio"] = round(f_cost / n_cost, 3) if f_cost and n_cost else None
    by_cpu = f"; by server CPU per request {out['cpu_ratio']} ({f_cost} vs {n_cost} µs)" if out["cpu_ratio"] else ""
    say(f"   => {label}: node/floor {out['ratio']} (best of {rounds}; rounds {per_round}){by_cpu}")
    return out


def _median_cost(rows: list[Row]) -> float | None:
    costs = [float(r["server_cpu_us_per_req"]) for r in rows if r.get("server_cpu_us_per_req")]
    return round(statistics.median(costs), 1) if costs else None
