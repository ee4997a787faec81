"""Drives ``openloop`` (``loadtest/openloop.c``), the C open-loop HTTP generator of `make bench`.

The Python harness cannot hold an open-loop schedule at the node's capacity on one core
(it fell hundreds of ms behind and dropped requests well below what wrk reaches), so the
rows that offer a fixed rate (half of capacity, and past capacity) use this single-threaded
C program instead: request i is due at start + i/rate, latency counts from that scheduled
time, a due request takes an idle keep-alive connection, opens one (up to a cap) or waits in a
FIFO, and one not answered within the client timeout is unanswered. It prints one JSON
document (see the C file's header); :func:`run` returns it parsed, with the CPU it spent.

:func:`build` compiles it with gcc through ``loadtest/install_tools.sh`` (into
``build/tools/openloop``) when it is missing or older than its source.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.result import SATURATED

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "loadtest" / "openloop.c"
BINARY = ROOT / "build" / "tools" / "openloop"
_INSTALL = ROOT / "loadtest" / "install_tools.sh"
UNANSWERED = ("timeout", "closed before answer", "connect error", "queue timeout", "bad response")


def build(binary: Path = BINARY) -> str | None:
    """Builds ``binary`` if it is missing or older than the source; None, or why it failed."""
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return None
    out = subprocess.run(
        ["bash", str(_INSTALL), "--openloop-only"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "OPENLOOP_OUT": str(binary)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not binary.exists():
        return f"cannot build openloop: {(out.stdout + out.stderr).strip()[-500:]}"
    return None


@dataclass(slots=True)
class OpenLoop:
    """One run: the tool's JSON document (empty if it failed) and what went wrong."""

    command: str
    doc: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None

    @property
    def ok(self) -> int:
        return int(self.doc.get("ok", 0))

    def latency(self, key: str = "2xx") -> dict[str, Any]:
        """count, p50, p90, p99, p99.9, max, mean (ms) of the answers with ``key`` (a status)."""
        empty = {"count": 0, "p50": None, "p90": None, "p99": None, "p99.9": None, "max": None, "mean": None}
        got: dict[str, Any] = self.doc.get("latency_ms", {}).get(key, empty)
        return got

    def answered(self) -> dict[str, int]:
        """Non-2xx answers by status, keyed as the harness keys them (``"http 503"``)."""
        return {f"http {s}": int(n) for s, n in self.doc.get("statuses", {}).items() if not s.startswith("2")}

    def unanswered(self) -> dict[str, int]:
        u = self.doc.get("unanswered", {})
        return {k: int(u[k]) for k in UNANSWERED if u.get(k)}

    def errors(self) -> dict[str, int]:
        return {**self.answered(), **self.unanswered()}

    @property
    def own_cpu(self) -> float:
        """Its CPU time over its wall time."""
        return float(self.doc.get("cpu", {}).get("own") or 0.0)

    @property
    def busy(self) -> float:
        """On a CPU or waiting for one, over wall time (its own CPU where unknown)."""
        demand = self.doc.get("cpu", {}).get("demand")
        return float(demand) if demand is not None else self.own_cpu

    @property
    def saturated(self) -> bool:
        return self.busy >= SATURATED

    def warnings(self) -> list[str]:
        out = []
        if self.saturated:
            whose = "other jobs took its core" if self.own_cpu < 0.8 else "it was CPU-bound"
            out.append(
                f"the generator was busy {self.busy:.0%} of the time (running or waiting for a CPU), its own "
                f"work {self.own_cpu:.0%}: {whose}"
            )
        late = self.doc.get("late", {})
        sched = max(1, int(self.doc.get("scheduled", 0)))
        if late.get("over_10ms") or late.get("over_1ms", 0) > 0.01 * sched:
            out.append(
                f"{late.get('over_1ms', 0):,} sends > 1 ms late ({late.get('over_1ms', 0) / sched:.1%}), "
                f"{late.get('over_10ms', 0):,} > 10 ms, up to {late.get('max_ms', 0):.1f} ms behind schedule "
                "(the generator woke late; its lateness counts in the latencies)"
            )
        if self.doc.get("error"):
            out.append(str(self.doc["error"]))
        return out

    def row(self) -> dict[str, Any]:
        """The bench's row for this run (the keys every generator's row has)."""
        if self.failed:
            return {"tool": "openloop", "failed": self.failed, "command": self.command, "throughput": 0.0}
        lat = self.latency()
        late = self.doc["late"]
        return {
            "tool": "openloop",
            "throughput": round(float(self.doc["ok_per_s"]), 1),
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "latency_ms": lat,
            "ok": self.ok,
            "errors": self.errors(),
            "generator_cpu": round(self.busy, 3),
            "generator_own_cpu": round(self.own_cpu, 3),
            "generator_saturated": self.saturated,
            "late_sends": int(late["over_10ms"]),
            "late_sends_1ms": int(late["over_1ms"]),
            "late_max_ms": round(float(late["max_ms"]), 2),
            "late_p99_ms": late.get("p99_ms"),
            "from_send_ms": self.latency("2xx from the send"),  # without the generator's lateness
            "connections_opened": self.doc["connections_opened"],
            "warnings": self.warnings(),
            "command": self.command,
        }


def run(
    url: str,
    bodies: Sequence[bytes],
    *,
    duration: float,
    work: Path,
    rate: float | None = None,
    closed: int | None = None,
    warmup: float = 0.0,
    connections: int = 1024,
    timeout: float = 10.0,
    headers: Sequence[str] = (),
    cpus: Sequence[int] | None = None,
    binary: Path = BINARY,
) -> OpenLoop:
    """POSTs ``bodies`` (JSON, rotated) to ``url``: at ``rate`` per second (open loop) or over
    ``closed`` connections (closed loop), for ``duration`` s after ``warmup`` s."""
    if (rate is None) == (closed is None):
        raise ValueError("give one of rate and closed")
    lines = work / "openloop-bodies.jsonl"
    lines.write_bytes(b"".join(b.replace(b"\n", b" ") + b"\n" for b in bodies))
    load = ["--rate", f"{rate:.3f}"] if rate is not None else ["--closed", str(closed)]
    cmd = [str(binary), "--url", url, *load, "--duration", f"{duration:g}", "--warmup", f"{warmup:g}"]
    cmd += ["--connections", str(connections), "--timeout", f"{timeout:g}", "--bodies", str(lines)]
    for h in headers:
        cmd += ["-H", h]
    shown = ["openloop", *cmd[1:]]
    shown[shown.index("--bodies") + 1] = f"<{len(bodies)} bodies>"
    result = OpenLoop(" ".join(shown))
    why = build(binary)
    if why:
        result.failed = why
        return result
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    limit = warmup + duration + timeout + 60
    try:
        out = subprocess.run(pin + cmd, capture_output=True, text=True, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        result.failed = f"openloop did not finish within {limit:g} s"
        return result
    if out.returncode != 0:
        result.failed = f"openloop exited {out.returncode}: {out.stderr.strip()[-300:]}"
        return result
    try:
        result.doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        result.failed = f"cannot read openloop's output: {out.stdout.strip()[-300:]}"
    return result
