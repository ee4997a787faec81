"""`make bench`: apinode's own speed, measured side by side in one run.

    python -m loadtest.bench [--duration 2] [--rounds 3] [--models fraud,logreg,forest]

The servers (the node with its workers, and the floors) run pinned to core 0 (``taskset -c
0``; workers inherit it), every load generator to the other cores. For the bundled fraud
example, a logistic regression and a random forest, all servers of a model are started
together, and the node and its floor are measured alternately, round after round (see
:mod:`loadtest.bench_runs`), so that the noise of a shared machine hits both alike:

1. HTTP ``predict`` and gRPC ``Predict``, on the node and on its floor (the same model behind
   a bare aiohttp / grpc.aio handler in one process, :mod:`loadtest.floors`): throughput,
   p50/p99, the server CPU per request and the node/floor ratio. The reference figures are
   wrk's at 32 and 64 connections (HTTP; non-2xx answers are errors) and h2load's (gRPC: one
   connection, 32 streams), C generators that need a fraction of their core; the harness's
   (fast HTTP transport; grpc.aio, whose C core costs some 300 µs of CPU a call; concurrency
   16) stand beside them.
2. gRPC ``PredictStream`` over 16 streams: predictions per second (harness, and h2load
   sending 100 framed requests per stream), h2load's against the gRPC floor's bare
   bidirectional stream (ratio node/floor).
3. ``predict-multi`` with 100 rows: rows per second (harness, HTTP, concurrency 4).
4. The Open Inference Protocol (:mod:`loadtest.bench_oip`): gRPC ``ModelInfer`` of one row
   against the gRPC floor's ``Predict`` (h2load, 32 streams), and HTTP ``/v2/models/{m}/infer``
   against the aiohttp floor's ``predict`` (wrk, 32 connections).
5. ``half``: p50/p99 of HTTP ``predict`` at half of the capacity (wrk, 32 connections), open
   loop (openloop, a C generator), and the aiohttp floor's at the same rate
   (:mod:`loadtest.bench_half`).
6. ``refuse``, once (on logreg when measured): the rejection cost, a full node's 503 and
   RESOURCE_EXHAUSTED against bare aiohttp / grpc.aio refusals, CPU µs per refusal
   (:mod:`loadtest.bench_refuse`).
7. and 8. Overload (openloop at 1.25x and 2x of wrk's capacity, 20 s each) and memory at rest,
   on the fraud example: :mod:`loadtest.bench_overload`; then the lookup part (:mod:`loadtest.bench_lookup`).

``--parts`` runs a subset of 1.-6. (``http,grpc,stream,multi,oip,explain,half,refuse``), e.g.
``--parts oip --models logreg --no-overload`` for the OIP rows alone, ``--parts refuse --models
logreg --no-overload --lookup-rows 0`` for the rejection cost alone.

Every generator checks itself: a row whose generator was CPU-bound (or starved of its CPU
by other jobs) is flagged, never silently kept. Results go to ``bench/results/<date>.json``,
``<date>.md``, ``latest.md`` and ``<date>.png`` (:mod:`loadtest.bench_report`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from loadtest import bench_refuse
from loadtest import bench_tools as tools
from loadtest.bench_env import Counters, cores, machine, memory, node_pids, pool_of, server_cpu, started
from loadtest.bench_half import bench_half
from loadtest.bench_lookup import bench_lookup
from loadtest.bench_oip import bench_oip_grpc, bench_oip_http
from loadtest.bench_overload import bench_overload
from loadtest.bench_report import markdown, plot
from loadtest.bench_runs import APINODE, Bench, Model, Row, compare, harness_row, ratio, say, show
from loadtest.config import Target
from loadtest.grpc_messages import encode_bodies, method_path

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16  # the harness's closed loop, and PredictStream's streams
WRK_CONNECTIONS = (32, 64)  # the reference HTTP rows (issue 17: 32 and 64 connections, 0 non-2xx)
GRPC_STREAMS = 32  # h2load's unary gRPC rows: one connection, this many concurrent streams
MULTI_ROWS = 100
MULTI_CONCURRENCY = 4
STREAM_MESSAGES = 100
# The default pool settings: the node, pinned to one core, reads a CPU budget of 1 and runs
# one prediction worker (a second would only take turns with the first); its queue counts
# batches, so 16 connections are never refused.
BENCH_POOL: dict[str, int] = {}
PARTS = ("http", "grpc", "stream", "multi", "oip", "explain", "half", "refuse")
GLOBAL_PARTS = ("refuse",)  # run once, not per model
# The explanation cost row: what a Dataiku client's predict_record(with_explanations=True,
# explanation_method="SHAPLEY", n_explanations=3, n_explanations_mc_steps=100) sends
EXPLAIN = {"enabled": True, "method": "SHAPLEY", "nExplanations": 3, "nMonteCarloSteps": 100}


def bench_model(m: Model, b: Bench, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    data = b.work / f"data-{m.name}"
    cfg = data / "config" / "services" / m.service / f"{m.endpoint}.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"pool": BENCH_POOL}))
    log = b.work / f"{m.name}.log"
    out: dict[str, Any] = {"model": m.name, "service": m.service, "endpoint": m.endpoint}
    floor = [*b.server_pin, sys.executable, "-m", "loadtest.floors"]
    fh_ports, fg_ports, node_ports = b.work / "fh.json", b.work / "fg.json", b.work / "node.json"
    with ExitStack() as stack:
        fh = stack.enter_context(started([*floor, "http", str(m.package), m.endpoint, str(fh_ports)], fh_ports, log))
        fg = stack.enter_context(started([*floor, "grpc", str(m.package), m.endpoint, str(fg_ports)], fg_ports, log))
        node = stack.enter_context(started(b.node_cmd(data, node_ports, m.package), node_ports, log))
        http = f"http://127.0.0.1:{node['http']}"
        grpc_addr = f"127.0.0.1:{node['grpc']}"
        out["pool"] = pool_of(http, m.service, m.endpoint)
        time.sleep(1.0)
        pids = node_pids(http, node["pid"])
        out["memory_mb"] = memory(pids)
        counters = Counters(http, m.service, m.endpoint)
        node_all = [p for group in pids.values() for p in group]
        fh_url, fg_addr = f"http://127.0.0.1:{fh['http']}", f"127.0.0.1:{fg['grpc']}"
        if "http" in parts:
            out["http"] = _http(m, b, fh_url, http, counters, {"floor": [fh["pid"]], "node": node_all})
        if "grpc" in parts:
            out["grpc"] = _grpc(m, b, fg_addr, grpc_addr, counters, {"floor": [fg["pid"]], "node": node_all})
        if "stream" in parts:
            out["stream"] = _stream(m, b, fg_addr, grpc_addr, counters)
        if "multi" in parts:
            out["multi"] = _multi(m, b, http)
        if "oip" in parts:
            grpc_pids = {"floor": [fg["pid"]], "node": node_all}
            out["oip_grpc"] = bench_oip_grpc(m, b, fg_addr, grpc_addr, http, counters, grpc_pids, GRPC_STREAMS)
            http_pids = {"floor": [fh["pid"]], "node": node_all}
            out["oip_http"] = bench_oip_http(m, b, fh_url, http, counters, http_pids, WRK_CONNECTIONS[0])
        if "half" in parts:
            out["half"] = bench_half(m, b, http, counters, floor=fh_url)
        if "explain" in parts and m.name == "fraud":  # the package with an explanation background
            out["explain"] = _explain(m, b, http)
        out["node_counters"] = counters.total()
    return out


def _http(
    m: Model, b: Bench, floor_url: str, node_url: str, counters: Counters, pids: dict[str, list[int]]
) -> dict[str, Any]:
    say(f"  HTTP predict: wrk at {' and '.join(map(str, WRK_CONNECTIONS))} connections, harness at {CONCURRENCY}")
    t = {
        who: Target(mode="http", url=url, service=m.service, endpoint=m.endpoint)
        for who, url in (("floor", floor_url), ("node", node_url))
    }
    body = orjson.dumps(m.bodies[0])

    def wrk(who: str, connections: int) -> Callable[[], Row]:
        url = t[who].http_url()
        return lambda: tools.wrk(
            url, body, concurrency=connections, duration=b.duration, work=b.work, cpus=b.gen_cpus
        ).row()

    def harness(who: str) -> Row:
        return harness_row(b.harness(t[who], m.bodies))

    out: dict[str, Any] = {
        "reference": f"wrk -c{WRK_CONNECTIONS[0]}",
        "tools": [f"wrk -c{c}" for c in WRK_CONNECTIONS] + ["harness"],
        "harness": compare("http", lambda: harness("floor"), counters.around(lambda: harness("node")), b.rounds),
    }
    for c in WRK_CONNECTIONS:
        out[f"wrk -c{c}"] = compare(
            f"http -c{c}",
            server_cpu(pids["floor"], wrk("floor", c)),
            counters.around(server_cpu(pids["node"], wrk("node", c))),
            b.rounds,
        )
    return out


def _grpc(
    m: Model, b: Bench, floor_addr: str, node_addr: str, counters: Counters, pids: dict[str, list[int]]
) -> dict[str, Any]:
    say(f"  gRPC Predict: h2load at {GRPC_STREAMS} streams, harness at {CONCURRENCY}")
    addr = {"floor": floor_addr, "node": node_addr}
    t = {who: Target(mode="grpc", grpc=a, service=m.service, endpoint=m.endpoint) for who, a in addr.items()}
    path = method_path("Predict")
    msg = encode_bodies(t["node"], m.bodies[:1])
    checked = {who: tools.verify_grpc(a, path, msg) or "ok" for who, a in addr.items()}
    say(f"   h2load body checked through grpc: {checked}")

    def h2load(who: str) -> Row:
        frame = tools.grpc_frame(msg)
        return tools.h2load(
            addr[who],
            path,
            frame,
            clients=1,
            streams=GRPC_STREAMS,
            duration=b.duration,
            warmup=0.0,  # the harness's rounds just warmed both servers; every call counts
            work=b.work,
            cpus=b.gen_cpus,
        ).row()

    def harness(who: str) -> Row:
        return harness_row(b.harness(t[who], m.bodies))

    return {
        "reference": "h2load",
        "streams": GRPC_STREAMS,
        "body_check": checked,
        "harness": compare("grpc", lambda: harness("floor"), counters.around(lambda: harness("node")), b.rounds),
        "h2load": compare(
            "grpc",
            server_cpu(pids["floor"], lambda: h2load("floor")),
            counters.around(server_cpu(pids["node"], lambda: h2load("node"))),
            b.rounds,
        ),
    }


def _stream(m: Model, b: Bench, floor_addr: str, addr: str, counters: Counters) -> dict[str, Any]:
    say(f"  gRPC PredictStream, {CONCURRENCY} streams")
    t = Target(mode="grpc-stream", grpc=addr, service=m.service, endpoint=m.endpoint)
    long = 2 * b.duration
    rows: dict[str, Any] = {"harness": harness_row(b.harness(t, m.bodies, connections=CONCURRENCY, duration=long))}
    show("stream node", rows["harness"])
    stream_bodies = [m.bodies[i % len(m.bodies)] for i in range(STREAM_MESSAGES)]
    msgs = encode_bodies(t, stream_bodies, stream=True)
    path = method_path("PredictStream")
    rows["body_check"] = {
        who: tools.verify_grpc(a, path, msgs) or "ok" for who, a in (("floor", floor_addr), ("node", addr))
    }

    def h2load(target: str) -> Row:
        h2 = tools.h2load(
            target,
            path,
            tools.grpc_frame(msgs),
            clients=1,
            streams=CONCURRENCY,
            duration=long,
            warmup=b.warmup,
            work=b.work,
            cpus=b.gen_cpus,
        )
        return h2.row(per_request=STREAM_MESSAGES)

    rows["h2load_floor"] = h2load(floor_addr)
    show("stream floor (pred/s)", rows["h2load_floor"])
    counters.mark()
    rows["h2load"] = h2load(addr)
    rows["h2load"]["node_side"] = counters.delta()
    rows["h2load"]["note"] = f"{STREAM_MESSAGES} predictions per stream; latency is per stream"
    show("stream node (pred/s)", rows["h2load"])
    rows["ratio"] = ratio(rows["h2load"], rows["h2load_floor"])
    say(f"   => stream: node/floor {rows['ratio']}")
    return rows


def _multi(m: Model, b: Bench, http: str) -> Row:
    say(f"  predict-multi, {MULTI_ROWS} rows, concurrency {MULTI_CONCURRENCY}")
    n = len(m.bodies)
    multi = [{"items": [m.bodies[(i + j) % n] for j in range(MULTI_ROWS)]} for i in range(0, n, 7)]
    t = Target(mode="http", url=http, service=m.service, endpoint=m.endpoint, verb="predict-multi")
    measured = b.harness(t, multi, concurrency=MULTI_CONCURRENCY, duration=2 * b.duration)
    row = harness_row(measured, per_request=MULTI_ROWS)
    show("multi node (rows/s)", row)
    return row


def _explain(m: Model, b: Bench, http: str) -> Row:
    """Latency of one predict with SHAPLEY explanations (k=3, 100 steps), one at a time."""
    say("  predict with SHAPLEY explanations (k=3, 100 steps), concurrency 1")
    bodies = [{**body, "explanations": EXPLAIN} for body in m.bodies]
    t = Target(mode="http", url=http, service=m.service, endpoint=m.endpoint, verb="predict")
    row = harness_row(b.harness(t, bodies, concurrency=1, duration=2 * b.duration))
    show("explain node (SHAPLEY k=3, 100 steps)", row)
    return row


def _models(names: list[str], work: Path) -> Iterator[Model]:
    fraud_pkg = ROOT / "build" / "fraud.apz"
    for name in names:
        if name == "fraud":
            example = ROOT / "examples/fraud"
            stale = not fraud_pkg.exists() or fraud_pkg.stat().st_mtime < (example / "service.yaml").stat().st_mtime
            if stale or not (example / "data" / "sample.csv").exists():
                subprocess.run([sys.executable, str(example / "train.py")], check=True)
                subprocess.run([APINODE, "compile", str(example), "-o", str(fraud_pkg)], check=True)
            yield Model("fraud", fraud_pkg, "fraud", "score", _fraud_bodies(example / "data" / "sample.csv"))
        else:
            from loadtest.bench_models import build

            pkg, bodies = build(name, work)
            yield Model(name, pkg, name, "score", bodies)


def _fraud_bodies(sample: Path, n: int = 200) -> list[Any]:
    """Held-out transactions with every feature and the customer_id: the node enriches
    (the caller's values win, so it predicts on the same features as the floor, which
    does not enrich), and pays for the lookup."""
    import pandas as pd

    frame = pd.read_csv(sample).head(n).drop(columns=["label"])
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{"features": r} for r in records]


@contextmanager
def _more_files() -> Iterator[None]:
    """An open loop past capacity holds a thousand connections: raise the fd limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench", description="apinode's benchmark suite")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement round (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="floor/node rounds per comparison (default 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--models", default="fraud,logreg,forest")
    ap.add_argument("--no-overload", action="store_true", help="skip the overload and memory part")
    ap.add_argument("--lookup-rows", type=int, default=1_000_000, help="rows of the lookup part (0: skip it)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"which rows per model (default {','.join(PARTS)})")
    args = ap.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    if not set(parts) <= set(PARTS):
        ap.error(f"--parts: choose among {', '.join(PARTS)}")
    t0 = time.monotonic()
    pin, gen_cpus = cores()
    doc: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": 0.5,
            "concurrency": CONCURRENCY,
            "wrk_connections": list(WRK_CONNECTIONS),
            "grpc_streams": GRPC_STREAMS,
            "multi_rows": MULTI_ROWS,
            "stream_messages_h2load": STREAM_MESSAGES,
            "bench_pool": BENCH_POOL,
        },
    }
    with tempfile.TemporaryDirectory(prefix="apinode-bench-") as tmp, _more_files():
        b = Bench(Path(tmp), args.duration, args.rounds, 0.5, CONCURRENCY, pin, gen_cpus)
        models = []
        per_model = tuple(p for p in parts if p not in GLOBAL_PARTS)
        for m in _models(args.models.split(","), b.work):
            say(f"== {m.name}")
            models.append((m, bench_model(m, b, per_model) if per_model else {"model": m.name}))
        doc["models"] = [r for _, r in models if len(r) > 1]
        example = next((m for m, _ in models if m.name == "fraud"), None)
        if example is not None and not args.no_overload:
            doc["overload"], doc["memory_at_rest"] = bench_overload(example, b)
        if "refuse" in parts and models:  # once, on the logistic regression if it was measured
            refuse_model = next((m for m, _ in models if m.name == "logreg"), models[0][0])
            doc["refuse"] = bench_refuse.measure(refuse_model, b)
        if args.lookup_rows:
            doc["lookup"] = bench_lookup(b.work, args.lookup_rows, pin, gen_cpus)
    doc["machine"]["loadavg_after"] = machine()["loadavg"]
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    (args.out / f"{stem}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    png = plot(doc, args.out / f"{stem}.png")
    md = markdown(doc, png.name if png else None)
    (args.out / f"{stem}.md").write_text(md)
    (args.out / "latest.md").write_text(md)
    say(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
