"""`make bench`: apinode's own speed, measured side by side in one run.

    python -m loadtest.bench [--duration 5] [--out bench/results]

For the bundled fraud example, a logistic regression and a random forest, with the node
(front process and workers) pinned to one core and the load generator to the other:

1. HTTP `predict` and gRPC `Predict` at fixed concurrency: throughput, p50/p99, and each as
   a ratio to its floor (the same model behind a bare aiohttp / grpc.aio handler in one
   process, :mod:`loadtest.floors`); wrk cross-checks the HTTP figure.
2. gRPC `PredictStream`: predictions per second.
3. `predict-multi` with 100 rows: rows per second.
4. Overload: open loop at twice the measured HTTP capacity for 10 s: served, rejected, p99
   of each, and the slowest served answer against the queue timeout.
5. Memory: resident memory of the node and its workers at rest.

Results go to `bench/results/<date>.json` and `.md` (with the machine's description).
Absolute numbers depend on a shared, noisy machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import requests

from loadtest.config import LoadConfig, Target
from loadtest.result import LoadResult
from loadtest.runner import run

ROOT = Path(__file__).resolve().parent.parent
APINODE = str(Path(sys.executable).parent / "apinode")
CONCURRENCY = 16


def _cores() -> tuple[list[str], tuple[int, ...] | None]:
    """taskset prefix for the server and the CPUs for the generator (when there are 2+)."""
    n = os.cpu_count() or 1
    if n < 2 or shutil.which("taskset") is None:
        return [], None
    return ["taskset", "-c", "0"], tuple(range(1, n))


@contextmanager
def _process(cmd: list[str], ports: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    ports.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ports.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:4]} did not start; see {log}")
            time.sleep(0.05)
        yield proc, json.loads(ports.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _load(target: Target, bodies: list[Any], duration: float, cpus: tuple[int, ...] | None, **kw: Any) -> LoadResult:
    cfg = LoadConfig(target=target, bodies=tuple(bodies), duration=duration, warmup=1.0, cpus=cpus, **kw)
    return run(cfg)


def _row(r: LoadResult, rows_per_request: int = 1) -> dict[str, Any]:
    return {
        "throughput": round(r.ok_throughput * rows_per_request, 1),
        "p50_ms": r.ok_latency.percentile_ms(50),
        "p99_ms": r.ok_latency.percentile_ms(99),
        "errors": dict(r.errors),
        "generator_saturated": any(c > 0.9 for c in r.cpu),
    }


def _rss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


def _wrk(url: str, body: dict[str, Any], duration: float, work: Path) -> float | None:
    if shutil.which("wrk") is None:
        return None
    script = work / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n')
    prefix = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 else []
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{CONCURRENCY}", f"-d{int(duration)}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = Path("/proc/meminfo").read_text().split("\n")[0] if Path("/proc/meminfo").exists() else ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem.split(":", 1)[-1].strip(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "pinning": "server on core 0, generator on cores 1+" if (os.cpu_count() or 1) > 1 else "none (1 core)",
    }


def bench_model(
    name: str, package: Path, service: str, endpoint: str, bodies: list[Any], work: Path, duration: float
) -> dict[str, Any]:
    pin, gen_cpus = _cores()
    out: dict[str, Any] = {"model": name}
    log = work / f"{name}.log"
    http_t = Target(mode="http", url="", service=service, endpoint=endpoint)
    # floors
    for kind in ("http", "grpc"):
        ports = work / f"floor-{kind}.json"
        cmd = [*pin, sys.executable, "-m", "loadtest.floors", kind, str(package), endpoint, str(ports)]
        with _process(cmd, ports, log) as (_, p):
            if kind == "http":
                t = Target(mode="http", url=f"http://127.0.0.1:{p['http']}", service=service, endpoint=endpoint)
            else:
                t = Target(mode="grpc", grpc=f"127.0.0.1:{p['grpc']}", service=service, endpoint=endpoint)
            out[f"floor_{kind}"] = _row(_load(t, bodies, duration, gen_cpus, concurrency=CONCURRENCY))
    # the node, pinned with its workers to one core: one worker per endpoint is what one core runs best
    data = work / f"data-{name}"
    cfg = data / "config" / "services" / service / f"{endpoint}.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"pool": {"floor": 1, "cruise": 1, "ceil": 1, "queue": 256}}))
    ports = work / f"node-{name}.json"
    cmd = [
        *pin,
        APINODE,
        "serve",
        "--data-dir",
        str(data),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--ports-file",
        str(ports),
        str(package),
    ]
    with _process(cmd, ports, log) as (proc, p):
        http = f"http://127.0.0.1:{p['http']}"
        grpc_addr = f"127.0.0.1:{p['grpc']}"
        http_t = Target(mode="http", url=http, service=service, endpoint=endpoint)
        grpc_t = Target(mode="grpc", grpc=grpc_addr, service=service, endpoint=endpoint)
        out["node_http"] = _row(_load(http_t, bodies, duration, gen_cpus, concurrency=CONCURRENCY))
        out["node_grpc"] = _row(_load(grpc_t, bodies, duration, gen_cpus, concurrency=CONCURRENCY))
        stream_t = Target(mode="grpc-stream", grpc=grpc_addr, service=service, endpoint=endpoint)
        out["node_grpc_stream"] = _row(
            _load(stream_t, bodies, duration, gen_cpus, concurrency=CONCURRENCY, connections=CONCURRENCY)
        )
        multi = [{"items": [bodies[(i + j) % len(bodies)] for j in range(100)]} for i in range(0, len(bodies), 7)]
        multi_t = Target(mode="http", url=http, service=service, endpoint=endpoint, verb="predict-multi")
        out["node_multi100_rows"] = _row(_load(multi_t, multi, duration, gen_cpus, concurrency=4), rows_per_request=100)
        out["wrk_node_http"] = _wrk(http_t.http_url(), bodies[0], duration, work)
        status = requests.get(http + "/admin/status", timeout=10).json()
        pids = [proc.pid]
        for gens in status["services"].values():
            for eps in gens["generations"].values():
                for st in eps.values():
                    pids += st["workers"]["pids"]
        time.sleep(1)
        out["memory_mb"] = {
            "node": round(_rss_kb(proc.pid) / 1024, 1),
            "workers": round(sum(_rss_kb(x) for x in pids[1:]) / 1024, 1),
        }
    for kind in ("http", "grpc"):
        floor = out[f"floor_{kind}"]["throughput"]
        out[f"ratio_{kind}"] = round(out[f"node_{kind}"]["throughput"] / floor, 3) if floor else None
    return out


def bench_overload(package: Path, bodies: list[Any], capacity: float, work: Path) -> dict[str, Any]:
    """Open loop at twice the capacity for 10 s against the example's own pool settings."""
    pin, gen_cpus = _cores()
    ports = work / "node-overload.json"
    cmd = [
        *pin,
        APINODE,
        "serve",
        "--data-dir",
        str(work / "data-overload"),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--ports-file",
        str(ports),
        str(package),
    ]
    with _process(cmd, ports, work / "overload.log") as (_, p):
        http = f"http://127.0.0.1:{p['http']}"
        pool = requests.get(http + "/admin/status", timeout=10).json()["services"]["fraud"]["generations"]["v1"][
            "score"
        ]["pool"]
        t = Target(mode="http", url=http, service="fraud", endpoint="score")
        r = _load(t, bodies, 10.0, gen_cpus, rate=2 * capacity, max_inflight=20_000)
    served_max = r.ok_latency.max_ms()
    return {
        "rate": round(2 * capacity),
        "pool": pool,
        "sent": r.sent,
        "served": r.ok,
        "rejected": dict(r.errors),
        "dropped_by_generator": r.dropped,
        "served_p99_ms": r.ok_latency.percentile_ms(99),
        "rejected_p99_ms": r.error_latency.percentile_ms(99),
        "served_max_ms": served_max,
        "within_queue_timeout": served_max is not None and served_max <= pool["timeout"] + 1000,
    }


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# apinode benchmark, {doc['date']}",
        "",
        "Machine: " + ", ".join(f"{k}: {v}" for k, v in doc["machine"].items()),
        "",
    ]
    lines += ["Command: `make bench` (`python -m loadtest.bench`), closed loop at concurrency 16, 1 s warmup, "
              f"{doc['duration']} s per row. Node = front process + workers pinned to one core.", ""]  # fmt: skip
    lines += [
        "| model | path | floor req/s | node req/s | ratio | node p50 ms | node p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in doc["models"]:
        for kind in ("http", "grpc"):
            f, n = m[f"floor_{kind}"], m[f"node_{kind}"]
            lines.append(
                f"| {m['model']} | {kind} predict | {f['throughput']} | {n['throughput']} | {m[f'ratio_{kind}']} | {n['p50_ms']:.2f} | {n['p99_ms']:.2f} |"
            )
    lines += [
        "",
        "| model | gRPC stream pred/s | predict-multi(100) rows/s | wrk HTTP req/s | RSS node MB | RSS workers MB |",
        "|---|---|---|---|---|---|",
    ]
    for m in doc["models"]:
        lines.append(
            f"| {m['model']} | {m['node_grpc_stream']['throughput']} | {m['node_multi100_rows']['throughput']} | "
            f"{m['wrk_node_http']} | {m['memory_mb']['node']} | {m['memory_mb']['workers']} |"
        )
    o = doc["overload"]
    lines += [
        "",
        f"Overload (fraud, open loop at {o['rate']}/s = 2x capacity, 10 s, pool {o['pool']['queue']} queue / {o['pool']['timeout']} ms timeout):",
        "",
    ]
    lines += [f"- sent {o['sent']}, served {o['served']}, rejected {o['rejected']}, dropped by generator {o['dropped_by_generator']}",
              f"- p99 served {o['served_p99_ms']} ms, p99 rejected {o['rejected_p99_ms']} ms, slowest served {o['served_max_ms']} ms "
              f"(within the queue timeout: {o['within_queue_timeout']})"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--models", default="fraud,logreg,forest")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="apinode-bench-"))
    fraud_pkg = ROOT / "build" / "fraud.apz"
    if not fraud_pkg.exists():
        subprocess.run([sys.executable, str(ROOT / "examples/fraud/train.py")], check=True)
        subprocess.run([APINODE, "compile", str(ROOT / "examples/fraud"), "-o", str(fraud_pkg)], check=True)
    from loadtest.payloads import load_bodies

    fraud_bodies = load_bodies(fraud_pkg, "score")
    models = []
    for name in args.models.split(","):
        print(f"== {name}", flush=True)
        if name == "fraud":
            models.append(bench_model("fraud", fraud_pkg, "fraud", "score", fraud_bodies, work, args.duration))
        else:
            from loadtest.bench_models import build

            pkg, bodies = build(name, work)
            models.append(bench_model(name, pkg, name, "score", bodies, work, args.duration))
        print(json.dumps(models[-1], indent=1), flush=True)
    capacity = models[0]["node_http"]["throughput"]
    print("== overload", flush=True)
    overload = bench_overload(fraud_pkg, fraud_bodies, capacity, work)
    doc = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "duration": args.duration,
        "concurrency": CONCURRENCY,
        "models": models,
        "overload": overload,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    (args.out / f"{stem}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    md = _markdown(doc)
    (args.out / f"{stem}.md").write_text(md)
    (args.out / "latest.md").write_text(md)
    print(md)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
