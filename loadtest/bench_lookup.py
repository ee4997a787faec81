"""Part 6 of `make bench`: a million-row bundled dataset behind a lookup endpoint.

    python -m loadtest.bench_lookup [--rows 1000000]

Writes a CSV of `rows` customers (string id, ints with holes, floats, text, dates),
compiles a service with a `lookup` endpoint on it (`apinode compile`), and measures, on
a real `apinode serve` pinned like the other parts:

- load: from starting the node to its ports being open (the package is unpacked and
  verified, the CSV read with its manifest types and indexed), and the node's RSS after;
- answer: the node's own `timing.lookup` (µs spent in the front process between the parsed
  body and the answer) over sequential calls, p50/p99/max;
- throughput: wrk at concurrency 16 on one key, the reference HTTP figure of the other parts.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtest import bench_tools as tools
from loadtest.bench_env import BENCH_ADMIN_KEY, cores, memory, node_pids, started
from loadtest.bench_runs import APINODE, say

SERVICE = """\
service: big
version: v1
datasets:
  customers: customers.csv
endpoints:
  customer:
    type: lookup
    dataset: customers
    keys: [customer_id]
"""


def write_customers(path: Path, rows: int, seed: int = 7) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows).astype("float")
    age[rng.random(rows) < 0.02] = np.nan  # holes: the column must stay an int column
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:08d}" for i in range(rows)],
            "age": pd.array(age, dtype="Int64"),
            "balance": np.round(rng.normal(1000, 400, rows), 2),
            "country": rng.choice(["FR", "DE", "ES", "IT", "GB", "US"], rows),
            "since": pd.to_datetime("2010-01-01") + pd.to_timedelta(rng.integers(0, 5000, rows), unit="D"),
        }
    )
    frame["since"] = frame["since"].dt.strftime("%Y-%m-%d")
    frame.to_csv(path, index=False)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return orjson.loads(r.read())  # type: ignore[no-any-return]


def bench_lookup(
    work: Path, rows: int = 1_000_000, pin: list[str] | None = None, gen_cpus: tuple[int, ...] | None = None
) -> dict[str, Any]:
    folder = work / "lookup-svc"
    folder.mkdir(parents=True, exist_ok=True)
    say(f"== lookup: writing {rows:,} customers")
    write_customers(folder / "customers.csv", rows)
    (folder / "service.yaml").write_text(SERVICE)
    pkg = work / "big.apz"
    t = time.monotonic()
    subprocess.run([APINODE, "compile", str(folder), "-o", str(pkg)], check=True, stdout=subprocess.DEVNULL)
    compile_s = time.monotonic() - t
    data, ports = work / "lookup-data", work / "lookup.ports.json"
    calls = 3000
    cmd = [*(pin or []), APINODE, "serve", "--data-dir", str(data), "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--ports-file", str(ports), "--admin-key", BENCH_ADMIN_KEY, str(pkg)]
    t = time.monotonic()
    with started(cmd, ports, work / "lookup-node.log") as info:
        load_s = time.monotonic() - t
        http = f"http://127.0.0.1:{info['http']}"
        url = f"{http}/public/api/v1/big/customer/lookup"
        mem = memory(node_pids(http, info["pid"]))
        rng = random.Random(1)
        keys = [f"C{rng.randrange(rows):08d}" for _ in range(calls)]
        first = _post(url, {"data": {"customer_id": keys[0]}})["results"][0]["data"]
        server_us = sorted(_post(url, {"data": {"customer_id": k}})["timing"]["lookup"] for k in keys)
        body = orjson.dumps({"data": {"customer_id": keys[0]}})
        run = tools.wrk(url, body, concurrency=16, duration=3.0, work=work, cpus=gen_cpus)
        wrk = {"rps": run.throughput, "p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "failed": run.failed}
    pct = {p: server_us[min(len(server_us) - 1, int(len(server_us) * p / 100))] for p in (50, 99)}
    out = {
        "rows": rows,
        "csv_mb": round((folder / "customers.csv").stat().st_size / 1e6, 1),
        "compile_s": round(compile_s, 2),
        "load_s": round(load_s, 2),
        "memory_mb": mem,
        "sample": first,
        "server_lookup_us": {"p50": pct[50], "p99": pct[99], "max": server_us[-1], "calls": calls},
        "wrk": wrk,
    }
    say(
        f"   {rows:,} rows ({out['csv_mb']} MB CSV): node up in {load_s:.2f} s, lookup p50 {pct[50]:.1f} µs "
        f"p99 {pct[99]:.1f} µs in the front process; wrk {wrk['rps']:,.0f} req/s"
    )
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    s = doc["server_lookup_us"]
    w = doc["wrk"]
    m = doc["memory_mb"]
    mem = f"{m['node_rss']:,.1f} MB (PSS {m['node_pss']:,.1f})" if isinstance(m, dict) else f"{m} MB"
    return [
        f"A lookup endpoint over a bundled CSV of {doc['rows']:,} rows ({doc['csv_mb']} MB; string key, int column "
        "with holes, float, text, date), compiled and served by the real CLI, node pinned to core 0.",
        "",
        "| node up (unpack, verify, read, index) | RSS after load | lookup in the front, p50 / p99 / max "
        "| wrk -c16 one key: req/s, p50 / p99 |",
        "|---|---|---|---|",
        f"| {doc['load_s']:.2f} s | {mem} | {s['p50']:.1f} / {s['p99']:.1f} / {s['max']:.1f} µs "
        f"| {w['rps']:,.0f}, {w['p50_ms'] or 0:.2f} / {w['p99_ms'] or 0:.2f} ms |",
        "",
        f"Sample answer: `{orjson.dumps(doc['sample']).decode()}`. Lookup time is the node's own "
        f"`timing.lookup` over {s['calls']:,} sequential calls on random keys.",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_lookup", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    pin, gen_cpus = cores()
    with tempfile.TemporaryDirectory(prefix="apinode-lookup-") as tmp:
        doc = bench_lookup(Path(tmp), args.rows, pin, gen_cpus)
    say("\n".join(markdown(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
