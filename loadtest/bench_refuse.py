"""`make bench`, the rejection cost row: what a refusal costs a full node, against a bare
server that only refuses, side by side in one run (``--parts refuse``).

A node serves the model with a pool of one worker and no queue (``queue: 0``); the worker is
stopped (SIGSTOP) while it holds one request, so the node refuses every other call at once:
503 OVERLOADED over HTTP, RESOURCE_EXHAUSTED over gRPC. Beside it, on the same core, the
refusal floors of :mod:`loadtest.floors`: a bare aiohttp handler answering the same 503, a
bare grpc.aio `Predict` aborting. wrk (``-c32``) and h2load (one connection, 32 streams)
drive them alternately, round after round; the figure is the CPU time the server's
processes spent per answer (from /proc; the stopped worker spends none), the median of the
rounds, and node/floor of those medians. Issue 17 asks for at most 1.5x over HTTP.

:func:`measure` takes several node variants (an environment each, e.g. another
``PYTHONPATH``) to compare code before and after a change in the same run.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import orjson
import requests

from loadtest import bench_tools as tools
from loadtest.bench_env import Counters, cpu_seconds, node_pids, started, workers_of
from loadtest.bench_runs import Bench, Model, Row, say, show
from loadtest.config import Target
from loadtest.grpc_messages import encode_bodies, method_path

CONNECTIONS = 32
REFUSING_POOL = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 0, "timeout": 2000}


def _answers(row: Row) -> int:
    """Calls the server answered, refusals included (wrk counts them as non-2xx; h2load sees
    a gRPC refusal as an HTTP 200 with its status in the trailers)."""
    errs = row.get("errors") or {}
    return int(row.get("ok") or 0) + sum(int(v) for k, v in errs.items() if k == "non-2xx" or k.startswith("http "))


def _per_answer(pids: list[int], measure: Callable[[], Row]) -> Callable[[], Row]:
    def measured() -> Row:
        before = cpu_seconds(pids)
        row = measure()
        spent = cpu_seconds(pids) - before
        n = _answers(row)
        row["answers"] = n
        row["server_cpu_s"] = round(spent, 3)
        row["server_cpu_us_per_answer"] = round(spent / n * 1e6, 1) if n else None
        return row

    return measured


def _median(rows: list[Row], key: str) -> float | None:
    got = [float(r[key]) for r in rows if r.get(key)]
    return round(statistics.median(got), 1) if got else None


def _rounds(label: str, sides: dict[str, Callable[[], Row]], rounds: int, floor: str) -> dict[str, Any]:
    """Every side once per round, in turn; medians of CPU per answer and of answers/s."""
    got: dict[str, list[Row]] = {who: [] for who in sides}
    for i in range(rounds):
        for who, measure in sides.items():
            row = measure()
            got[who].append(row)
            show(f"{label} {who} #{i + 1}", {**row, "throughput": row["answers_per_s"]})
    out: dict[str, Any] = {"rounds": got}
    cost = {who: _median(rows, "server_cpu_us_per_answer") for who, rows in got.items()}
    rate = {who: _median(rows, "answers_per_s") for who, rows in got.items()}
    out["cpu_us_per_answer"], out["answers_per_s"] = cost, rate
    base = cost[floor]
    out["cpu_ratio"] = {who: round(c / base, 2) if c and base else None for who, c in cost.items() if who != floor}
    out["generator_saturated_rounds"] = {
        who: sum(1 for r in rows if r.get("generator_saturated")) for who, rows in got.items()
    }
    say(f"   => {label}: CPU µs per answer {cost}; answers/s {rate}; node/floor by CPU {out['cpu_ratio']}")
    return out


def _held(url: str, body: dict[str, Any], out: dict[str, Any]) -> threading.Thread:
    def send() -> None:
        try:
            out["status"] = requests.post(url, json=body, timeout=600).status_code
        except requests.RequestException as exc:
            out["status"] = repr(exc)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


def measure(m: Model, b: Bench, variants: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The rejection cost of the node (or of each variant: a label and the environment its
    node runs with) against the refusal floors."""
    variants = variants or {"node": {}}
    say(
        f"== rejection cost: {m.name}, a full pool (queue 0, its worker stopped) vs a bare 503, {CONNECTIONS} connections"
    )
    floor = [*b.server_pin, sys.executable, "-m", "loadtest.floors"]
    log = b.work / "refuse.log"
    doc: dict[str, Any] = {"model": m.name, "pool": REFUSING_POOL, "connections": CONNECTIONS}
    with ExitStack() as stack:
        fh_ports, fg_ports = b.work / "refuse-fh.json", b.work / "refuse-fg.json"
        fh = stack.enter_context(started([*floor, "http503", str(m.package), m.endpoint, str(fh_ports)], fh_ports, log))
        fg = stack.enter_context(started([*floor, "grpc503", str(m.package), m.endpoint, str(fg_ports)], fg_ports, log))
        nodes: dict[str, dict[str, Any]] = {}
        stopped: list[tuple[int, threading.Thread, dict[str, Any]]] = []
        try:
            for label, env in variants.items():
                data = b.work / f"data-refuse-{label}"
                cfg = data / "config" / "services" / m.service / f"{m.endpoint}.json"
                cfg.parent.mkdir(parents=True, exist_ok=True)
                cfg.write_text(orjson.dumps({"pool": REFUSING_POOL}).decode())
                ports = b.work / f"refuse-{label}.json"
                cmd = b.node_cmd(data, ports, m.package)
                cmd[-1:-1] = ["--ping-timeout", "600"]  # the stopped worker is not declared lost
                at = len(b.server_pin)
                cmd[at:at] = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
                node = stack.enter_context(started(cmd, ports, log))
                http = f"http://127.0.0.1:{node['http']}"
                pids = node_pids(http, node["pid"])
                (worker,) = pids[f"{m.service}/{m.endpoint}"]
                os.kill(worker, signal.SIGSTOP)
                held: dict[str, Any] = {}
                stopped.append(
                    (worker, _held(f"{http}/public/api/v1/{m.service}/{m.endpoint}/predict", m.bodies[0], held), held)
                )
                _wait_busy(http, m)
                nodes[label] = {
                    "http": http,
                    "grpc": f"127.0.0.1:{node['grpc']}",
                    "pids": [node["pid"]],
                    "counters": Counters(http, m.service, m.endpoint),
                }
            doc["http"] = _http(m, b, f"http://127.0.0.1:{fh['http']}", fh["pid"], nodes)
            doc["grpc"] = _grpc(m, b, f"127.0.0.1:{fg['grpc']}", fg["pid"], nodes)
            doc["node_side"] = {label: n["counters"].total() for label, n in nodes.items()}
        finally:
            for worker, t, _ in stopped:
                os.kill(worker, signal.SIGCONT)
                t.join(60)
            doc["held_request"] = [held.get("status") for _, _, held in stopped]
    return doc


def _wait_busy(http: str, m: Model, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while workers_of(http, m.service, m.endpoint).get("busy") != 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the held request never reached the stopped worker")
        time.sleep(0.05)


def _http(m: Model, b: Bench, floor_url: str, floor_pid: int, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    say(f"  HTTP predict refused, wrk -c{CONNECTIONS}")
    body = orjson.dumps(m.bodies[0])

    def wrk(url: str) -> Callable[[], Row]:
        target = Target(mode="http", url=url, service=m.service, endpoint=m.endpoint)

        def run() -> Row:
            row = tools.wrk(
                target.http_url(), body, concurrency=CONNECTIONS, duration=b.duration, work=b.work, cpus=b.gen_cpus
            ).row()
            row["seconds"] = max(1, round(b.duration))
            row["answers_per_s"] = round(_answers(row) / row["seconds"], 1)
            return row

        return run

    sides = {"floor": _per_answer([floor_pid], wrk(floor_url))}
    for label, n in nodes.items():
        sides[label] = _per_answer(n["pids"], wrk(n["http"]))
    out = _rounds("refuse-http", sides, b.rounds, "floor")
    out["tool"] = f"wrk -t1 -c{CONNECTIONS}"
    return out


def _grpc(m: Model, b: Bench, floor_addr: str, floor_pid: int, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    say(f"  gRPC Predict refused, h2load -c1 -m{CONNECTIONS}")
    target = Target(mode="grpc", grpc=floor_addr, service=m.service, endpoint=m.endpoint)
    frame = tools.grpc_frame(encode_bodies(target, m.bodies[:1]))

    def h2load(addr: str) -> Callable[[], Row]:
        def run() -> Row:
            row = tools.h2load(
                addr,
                method_path("Predict"),
                frame,
                clients=1,
                streams=CONNECTIONS,
                duration=b.duration,
                warmup=0.0,
                work=b.work,
                cpus=b.gen_cpus,
            ).row()
            row["seconds"] = b.duration
            row["answers_per_s"] = round(_answers(row) / b.duration, 1)
            return row

        return run

    sides = {"floor": _per_answer([floor_pid], h2load(floor_addr))}
    for label, n in nodes.items():
        sides[label] = _per_answer(n["pids"], h2load(n["grpc"]))
    out = _rounds("refuse-grpc", sides, b.rounds, "floor")
    out["tool"] = f"h2load -t1 -c1 -m{CONNECTIONS}"
    return out
