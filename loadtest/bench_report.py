"""The benchmark suite's summary: markdown tables and one PNG, from the results document.

Every figure says which tool measured it. The reference ratios are wrk's (HTTP) and
h2load's (gRPC), C generators that leave the server's core the only limit; the harness's
own figures stand beside them. Rows whose generator was CPU-bound carry a mark and a
warning, so a figure that describes the generator is never mistaken for the server's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest.bench_half import TARGET_P99_MS
from loadtest.bench_lookup import markdown as lookup_markdown

_SAT = " ⚠"  # the generator of this row was CPU-bound


def _n(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _ms(row: dict[str, Any]) -> str:
    if row.get("failed") or row.get("p50_ms") is None:
        return "-"
    return f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f}"


def _tp(row: dict[str, Any]) -> str:
    if row.get("failed"):
        return "failed"
    return _n(row["throughput"]) + (_SAT if row.get("generator_saturated") else "")


def _range(ratios: list[float | None]) -> str:
    got = [r for r in ratios if r is not None]
    return f"{min(got):.2f}-{max(got):.2f}" if got else "-"


_APIS = (
    ("http", "HTTP predict"),
    ("grpc", "gRPC Predict"),
    ("oip_http", "OIP HTTP infer"),
    ("oip_grpc", "OIP gRPC ModelInfer"),
)


def _tools(api: dict[str, Any]) -> list[str]:
    """The generators of a row, the reference first (older documents list none)."""
    listed = api.get("tools") or [api["reference"], "harness"]
    return [t for t in listed if t in api]


def _ratio_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| model | API | tool | floor req/s | node req/s | **node/floor** | per round | floor p50 / p99 ms "
        "| node p50 / p99 ms | server CPU µs/req floor / node | node/floor by CPU | node req per model run |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in doc["models"]:
        for api, label in _APIS:
            if api not in m:
                continue
            ref = m[api]["reference"]
            for tool in _tools(m[api]):
                c = m[api][tool]
                floor, node, ratio = c["floor"], c["node"], c["ratio"]
                shown = "-" if ratio is None else (f"**{ratio:.2f}**" if tool == ref else f"{ratio:.2f}")
                cost = c.get("cpu_us_per_req") or {}
                cost_txt = f"{_n(cost.get('floor'))} / {_n(cost.get('node'))}" if cost.get("node") else "-"
                lines.append(
                    f"| {m['model']} | {label} | {tool} | {_tp(floor)} | {_tp(node)} | {shown} | "
                    f"{_range(c['round_ratios'])} | {_ms(floor)} | {_ms(node)} | {cost_txt} | "
                    f"{_n(c.get('cpu_ratio'), 2)} | {_n(node.get('requests_per_run'), 1)} |"
                )
    return lines


def _throughput_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| model | gRPC stream pred/s (harness, 16 streams) | gRPC stream pred/s (h2load) | bare grpc.aio stream floor (h2load) | node/floor | predict-multi rows/s (harness) | multi p50 / p99 ms | mean batch (rows) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in doc["models"]:
        if "stream" not in m or "multi" not in m:
            continue
        s, multi, c = m["stream"], m["multi"], m["node_counters"]
        batch = c["batched_rows"] / c["batches"] if c.get("batches") else None
        lines.append(
            f"| {m['model']} | {_tp(s['harness'])} | {_tp(s['h2load'])} | "
            f"{_tp(s['h2load_floor']) if 'h2load_floor' in s else '-'} | {_n(s.get('ratio'), 2)} | "
            f"{_tp(multi)} | {_ms(multi)} | {_n(batch, 1)} |"
        )
    return lines


def _explain_table(doc: dict[str, Any]) -> list[str]:
    rows = [m for m in doc["models"] if "explain" in m]
    if not rows:
        return []
    lines = [
        "",
        "## Explanations: predict with SHAPLEY (k=3, 100 Monte Carlo steps), one request at a time",
        "",
        "| model | predictions/s | p50 / p99 ms |",
        "|---|--:|--:|",
    ]
    for m in rows:
        lines.append(f"| {m['model']} | {_tp(m['explain'])} | {_ms(m['explain'])} |")
    return lines


def _overload(runs: list[dict[str, Any]]) -> list[str]:
    o = runs[0]
    pool = o["pool"]
    measured_by = o.get("capacity_tool", "the harness, closed loop, concurrency 16")
    out = [
        f"Open loop at multiples of the capacity measured on this node just before "
        f"({_n(o['capacity_rps'])} req/s, {measured_by}), {o['seconds']:g} s each, HTTP predict on the "
        f"example with its own pool (floor {pool.get('floor')}, ceil {pool.get('ceil')}, queue {pool.get('queue')}, "
        f"timeout {pool.get('timeout')} ms), offered by {o['tool']}. Latency counts from each request's scheduled "
        f"send time. Callers use up to {o['connections_cap']} connections and give up after "
        f"{o['client_timeout_s']:g} s (unanswered).",
        "",
        "| offered | sent | served | **served/s / capacity** | rejected (answered, by status) | unanswered "
        "| served p50 / p99 / max ms | rejected p50 / p99 / max ms | answered/s | slowest answer vs queue timeout + bound |",
        "|---|--:|--:|--:|---|---|--:|--:|--:|---|",
    ]
    for r in runs:
        served, rejected = r["served_ms"], r["rejected_ms"]
        rej = ", ".join(f"{k}: {v:,}" for k, v in r["rejected"].items()) or "none"
        lost = ", ".join(f"{k}: {v:,}" for k, v in r["unanswered"].items()) or "none"
        within = "within" if r["nothing_waited_past_timeout"] else "**PAST IT**"
        bound = r.get("late_bound_ms", 0.0)
        out.append(
            f"| {r['factor']:g}x = {_n(r['rate_rps'])}/s | {r['sent']:,} | {r['served']:,} "
            f"| {_n(r.get('served_per_capacity'), 2)} | {rej} | {lost} "
            f"| {_n(served['p50'], 1)} / {_n(served['p99'], 1)} / {_n(served['max'], 1)} "
            f"| {_n(rejected['p50'], 1)} / {_n(rejected['p99'], 1)} / {_n(rejected['max'], 1)} "
            f"| {_n(r['answered_rps'])} "
            f"| {_n(r['slowest_answer_ms'], 1)} ms vs {_n(r['queue_timeout_ms'])} + {_n(bound)} ms: {within} |"
        )
    out.append("")
    for r in runs:
        g = r["generator"]
        why = "other jobs took its CPU" if g["own_cpu"] < 0.8 else "it was CPU-bound"
        schedule = "yes" if g["on_schedule"] else f"**no**: up to {g['late_max_ms']:,.0f} ms behind at times ({why})"
        full = "yes" if g["offered_in_full"] else f"**NO: the node was offered less than {r['factor']:g}x**"
        if "dropped" in g:  # the harness's documents
            offered = f"sent {g['achieved_rps']:,} req/s on average, dropped {g['dropped']}"
        else:
            offered = (
                f"{g['achieved_rps']:,} req/s scheduled, {g['waited_at_connection_cap']:,} waited for a connection "
                f"at the cap, {g['connections_opened']:,} connections opened"
            )
        out += [
            f"- {r['factor']:g}x: {r['answers']:,} answers (served + rejected) in the {r['run_s']:.1f} s from the "
            f"first send to the last answer or client timeout. The node's own counters: {r['node_side']} "
            "(rejected = refused at once, refused_unparsed = of those, refused from the request's bytes "
            "before parsing; timed_out = waited the whole queue timeout; absent = 0). "
            f"Generator: offered in full: {full} ({offered}); on schedule: {schedule}, {g['late']:,} sends > 10 ms "
            f"late; own CPU {g['own_cpu']:.0%}, {g['cpu']:.0%} busy (running or waiting for a CPU).",
        ]
    return out


def _overload_runs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The overload steps (a single dict: a result file from before the steps existed)."""
    o = doc.get("overload")
    return [] if not o else [o] if isinstance(o, dict) else list(o)


def _half_table(doc: dict[str, Any]) -> list[str]:
    rows = [m for m in doc["models"] if "half" in m]
    if not rows:
        return []
    first = rows[0]["half"]
    tool = first.get("tool", "harness")
    by = first.get("capacity_tool", "closed loop, concurrency 16")
    lines = [
        "",
        f"## Latency at half of capacity: HTTP predict, open loop ({tool})",
        "",
        f"Capacity measured just before ({by}); then half of it offered at a steady rate, latency from each "
        "request's scheduled send time (the generator's own lateness included). Issue 17: p99 ≤ 2 ms for the "
        "logistic regression.",
        "",
        "| model | capacity req/s | offered req/s | served | errors | **p50 / p99 ms** | sends > 10 ms late (max ms) "
        "| bare aiohttp floor at the same rate, p50 / p99 ms |",
        "|---|--:|--:|--:|---|--:|--:|--:|",
    ]
    for m in rows:
        h = m["half"]
        if h.get("failed"):
            lines.append(f"| {m['model']} | failed: {h['failed']} | | | | | | |")
            continue
        errs = ", ".join(f"{k}: {v}" for k, v in h["errors"].items()) or "none"
        sat = _SAT if h.get("generator_saturated") else ""
        lines.append(
            f"| {m['model']} | {_n(h['capacity_rps'])} | {_n(h['rate_rps'])}{sat} | {h['ok']:,} | {errs} "
            f"| {_ms(h)} | {h['late_sends']:,} ({_n(h['late_max_ms'], 1)}) | {_ms(h['floor']) if 'floor' in h else '-'} |"
        )
    return lines


def _refuse_table(doc: dict[str, Any]) -> list[str]:
    r = doc.get("refuse")
    if not r:
        return []
    lines = [
        "",
        "## Rejection cost: a full node against a bare server that only refuses",
        "",
        f"The {r['model']} endpoint with pool {r['pool']}, its one worker stopped while it holds a request: every "
        "other call is refused at once (503 OVERLOADED over HTTP, RESOURCE_EXHAUSTED over gRPC). Floors on the same "
        "core: a bare aiohttp handler answering the same 503, a bare grpc.aio `Predict` aborting "
        "(`loadtest/floors.py`). Server CPU per answer from /proc, median of the rounds; issue 17 asks for at most "
        "1.5x over HTTP.",
        "",
        "| API | tool | side | answers/s (median) | **server CPU µs per refusal** | node cost / floor cost | rounds with a CPU-bound generator |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for api, label in (("http", "HTTP predict"), ("grpc", "gRPC Predict")):
        if api not in r:
            continue
        a = r[api]
        for side, cost in a["cpu_us_per_answer"].items():
            ratio = a["cpu_ratio"].get(side)
            lines.append(
                f"| {label} | {a['tool']} | {side} | {_n(a['answers_per_s'][side])} | {_n(cost, 1)} "
                f"| {'-' if ratio is None else f'**{ratio:.2f}**'} | {a['generator_saturated_rounds'][side]} |"
            )
    return lines


def _memory(mem: dict[str, Any]) -> list[str]:
    return [
        "| process | RSS MB | PSS MB |",
        "|---|--:|--:|",
        f"| node (front: HTTP + gRPC + supervisor) | {mem['node_rss']} | {mem['node_pss']} |",
        f"| {mem['workers']} workers ({', '.join(f'{k}: {v}' for k, v in mem['per_endpoint_rss'].items())}) "
        f"| {mem['workers_rss']} | {mem['workers_pss']} |",
        f"| total | {round(mem['node_rss'] + mem['workers_rss'], 1)} | {round(mem['node_pss'] + mem['workers_pss'], 1)} |",
    ]


def _rows(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measured row with a label: model, what, server, tool."""
    out = []
    for m in doc["models"]:
        for api, _ in _APIS:
            for tool in _tools(m[api]) if api in m else ():
                for who in ("floor", "node") if tool in m[api] else ():
                    out.append((f"{m['model']} {api} {who} ({tool})", m[api][tool][who]))
        for tool in ("harness", "h2load") if "stream" in m else ():
            out.append((f"{m['model']} stream node ({tool})", m["stream"][tool]))
        if "multi" in m:
            out.append((f"{m['model']} multi rows node (harness)", m["multi"]))
        if "half" in m:
            out.append((f"{m['model']} half capacity node ({m['half'].get('tool', 'harness')})", m["half"]))
    return out


def _warnings(doc: dict[str, Any]) -> list[str]:
    out = []
    for label, row in _rows(doc):
        if row.get("generator_saturated") or row.get("generator_saturated_rounds"):
            own = row.get("generator_own_cpu")
            why = (
                f"waited for a CPU (busy {row['generator_cpu']:.0%}, of which its own work {own:.0%}: other jobs "
                "on the machine took its core)"
                if own is not None and own < 0.8
                else f"CPU-bound ({row['generator_cpu']:.0%})"
            )
            rounds = row.get("generator_saturated_rounds")
            which = f"in {rounds} of its rounds" if rounds else "in this row"
            out.append(f"- {label}: {which}, the generator {why}; such a figure is a lower bound.")
        if row.get("failed"):
            out.append(f"- {label}: {row['failed']}")
        side = row.get("node_side") or {}
        bad = {k: v for k, v in side.items() if k in ("rejected", "timed_out", "failed", "crashed")}
        if bad:
            out.append(f"- {label}: the node counted errors h2load cannot see: {bad}")
    for m in doc["models"]:
        checks = [
            (w, m[k]["body_check"])
            for w, k in (("gRPC Predict", "grpc"), ("PredictStream", "stream"), ("OIP ModelInfer", "oip_grpc"))
            if k in m
        ]
        for where, check in checks:
            problems = {k: v for k, v in (check.items() if isinstance(check, dict) else [("node", check)]) if v != "ok"}
            if problems:
                out.append(f"- {m['model']} {where}: the h2load body failed its check: {problems}")
    for api, r in (doc.get("refuse") or {}).items():
        for side, n in (r.get("generator_saturated_rounds") or {}).items() if isinstance(r, dict) else ():
            if n:
                out.append(f"- rejection cost {api} {side}: in {n} rounds the generator was CPU-bound.")
    for m in doc["models"]:
        h = m.get("half", {})
        if h.get("tool") == "openloop":  # its own self-check: CPU, late sends
            out += [f"- {m['model']} half capacity: {w}" for w in h.get("warnings", [])]
        floor = h.get("floor") or {}
        if floor.get("p99_ms") is not None and (floor["p99_ms"] > TARGET_P99_MS or floor.get("errors")):
            out.append(
                f"- {m['model']} half capacity: the bare aiohttp floor, offered the same rate, had p99 "
                f"{floor['p99_ms']:.2f} ms (errors {floor.get('errors') or 'none'}): on this machine at this time a "
                f"p99 of {TARGET_P99_MS:g} ms was out of reach of any server, not only of the node."
            )
    for o in _overload_runs(doc):
        out += [f"- overload {o.get('factor', 2):g}x: {w}" for w in o["warnings"]]
    return out or ["- none: no generator was CPU-bound, every h2load body was answered with status OK."]


def markdown(doc: dict[str, Any], png: str | None) -> str:
    mc, st = doc["machine"], doc["settings"]
    lines = [
        f"# apinode benchmark, {doc['date']}",
        "",
        f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['memory']} RAM, {mc['os']}, Python {mc['python']}. "
        f"Load average before / after: {mc['loadavg']} / {mc.get('loadavg_after', '?')} (a shared machine: "
        "other jobs ran alongside, so absolute figures move from run to run; ratios measured back to back move less).",
        "",
        f"Command: `make bench` (`.venv/bin/python -m loadtest.bench`), {doc.get('elapsed_s', '?')} s. "
        f"{mc['pinning']}. The node runs its front process and its workers on its one core, with "
        f"pool {st['bench_pool']} for parts 1-3. Node and floor are measured alternately, "
        f"{st['rounds']} rounds of {st['duration_s']:g} s each (after {st['warmup_s']:g} s of warmup; wrk: "
        "none, it runs after the harness warmed the server); each side's best round is shown, with the "
        "node/floor ratio of every round beside it.",
        "",
        f"Tools: **wrk** `-t1 -c{'/'.join(map(str, st.get('wrk_connections', [16])))}` (HTTP/1.1, one body; "
        "non-2xx answers are counted as errors, not as served) and "
        f"**h2load** `-t1 -c1 -m{st.get('grpc_streams', 16)}` (gRPC over one "
        f"HTTP/2 connection, {st.get('grpc_streams', 16)} streams; the framed body is checked once through grpc for status OK and the "
        "node's counters are read around the run) give the reference figures. **harness** is apinode's own "
        "generator (`apinode loadtest`: fast raw-asyncio HTTP client; grpc.aio), cycling through the "
        "package's test rows; p50/p99 from its HDR histograms. ⚠ marks a CPU-bound generator.",
        "",
        "## 1. Single-record predict: node vs floor (wrk and h2load at the connections above, harness at 16)",
        "",
        "Floor: the same ONNX model behind a bare aiohttp handler / bare grpc.aio servicer in one process "
        "(`loadtest/floors.py`), one `session.run` per request. The goal is node/floor ≥ 0.8. The last column "
        "is the node's own count: requests per model run in its worker (above 1: requests that waited together "
        "went over in one message and one `session.run`). *Server CPU µs/req* is the CPU time the server's "
        "processes (node: front + workers) spent per answer during the wrk/h2load rounds (median of the rounds), "
        "from /proc; *node/floor by CPU* = floor cost / node cost. Unlike throughput it does not depend on how "
        "much of core 0 other jobs left each server: the scheduler shares a core per runnable thread, so on a "
        "busy machine the node (two busy processes) gets a larger share of core 0 than a one-process floor, "
        "which flatters the node's throughput ratio. *OIP gRPC ModelInfer*: the node answering the Open "
        "Inference Protocol (one row in `raw_input_contents`, as tritonclient sends it) against the same gRPC "
        "floor's `Predict`. *OIP HTTP infer*: `POST /v2/models/<service>.<endpoint>/infer` with one row as JSON "
        "tensors, against the aiohttp floor's Dataiku `predict`.",
        "",
        *_ratio_table(doc),
        "",
        "## 2-3. Streaming and predict-multi (100 rows) on the node",
        "",
        *_throughput_table(doc),
        "",
        "h2load streams: 16 concurrent PredictStream calls of 100 requests each (the node reads up to 64 "
        "messages of a stream ahead and batches them, answering in order; the floor answers each in turn); "
        "the harness's 16 streams keep one request in flight each.",
        *_explain_table(doc),
        *_half_table(doc),
        *_refuse_table(doc),
    ]
    if _overload_runs(doc):
        lines += [
            "",
            f"## 4. Overload: past capacity, open loop ({_overload_runs(doc)[0].get('tool', 'harness')})",
            "",
            *_overload(_overload_runs(doc)),
        ]
    if doc.get("memory_at_rest"):
        lines += [
            "",
            "## 5. Memory at rest, example deployed (its own pool settings)",
            "",
            *_memory(doc["memory_at_rest"]),
        ]
    if doc.get("lookup"):
        lines += ["", "## 6. Lookup endpoint over a million-row dataset", "", *lookup_markdown(doc["lookup"])]
    lines += ["", "## Generator self-check and warnings", "", *_warnings(doc)]
    if png:
        lines += ["", f"![throughput and latency per row]({png})"]
    lines += ["", f"Full figures (histogram percentiles, commands, errors): `{doc['date'][:10]}.json`."]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    """Throughput and p50/p99 of every row, as two panels of horizontal bars; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [(label, r) for label, r in _rows(doc) if not r.get("failed")]
    if not rows:
        return None
    labels = [label for label, _ in rows]
    ys = list(range(len(rows)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) + 1.6), dpi=100, sharey=True)
    try:
        colors = [
            "tab:red" if r.get("generator_saturated") else ("tab:gray" if " floor " in lb else "tab:blue")
            for lb, r in rows
        ]
        left.barh(ys, [r["throughput"] for _, r in rows], color=colors)
        left.set_yticks(ys, labels, fontsize=8)
        left.invert_yaxis()
        left.set_xscale("log")
        left.set_xlabel("served per second, log (rows/s for multi, predictions/s for streams)")
        left.grid(axis="x", alpha=0.3)
        for p, marker in (("p50_ms", "o"), ("p99_ms", "|")):
            right.scatter([r.get(p) or float("nan") for _, r in rows], ys, marker=marker, label=p[:3], s=40)
        right.set_xscale("log")
        right.set_xlabel("latency ms (log): o p50, | p99")
        right.grid(axis="x", alpha=0.3)
        right.legend(loc="lower right", fontsize=8)
        fig.suptitle(f"apinode bench {doc['date']} (grey: floors, blue: node, red: generator CPU-bound)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
