"""The outcome of a load run: counts, rates, latency histograms, generator health.

A :class:`LoadResult` is built by each client process from its :class:`Recorder`, sent to
the parent as JSON-ready data (histograms encoded), and merged there. ``to_dict`` is also
the JSON report of one run; ``from_dict`` reads it back, so a benchmark suite can store
results and compare them later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadtest.selfcheck import CpuUse
from loadtest.stats import PERCENTILES, Latency, Recorder

SATURATED = 0.9  # a client event loop busier than this may be what limits the run


@dataclass(slots=True)
class LoadResult:
    """Counts and latencies of a measured phase (all processes of a run merged).

    ``sent == ok + sum(errors.values())``; ``dropped`` were scheduled but never sent.
    Errors have one latency histogram for all and one per error key.
    ``duration`` runs from the first send to the last answer. ``cpu`` holds, per client
    process, the busy fraction of its event-loop thread over that time, and ``cpu_peak``
    its busiest one-second window (see :mod:`loadtest.selfcheck`). Open loop: ``late``
    sends left more than 10 ms behind their schedule, the worst by ``late_max`` seconds.
    """

    sent: int
    ok: int
    errors: dict[str, int]
    dropped: int
    duration: float
    ok_latency: Latency = field(default_factory=Latency)
    error_latency: Latency = field(default_factory=Latency)
    error_latency_by_key: dict[str, Latency] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)
    cpu_peak: list[float] = field(default_factory=list)
    late_max: float = 0.0
    late: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_recorder(cls, rec: Recorder, duration: float, cpu: CpuUse, config: dict[str, Any]) -> LoadResult:
        return cls(
            sent=rec.sent,
            ok=rec.ok,
            errors=dict(rec.errors),
            dropped=rec.dropped,
            duration=duration,
            ok_latency=rec.ok_latency,
            error_latency=rec.error_latency,
            error_latency_by_key=dict(rec.error_latency_by_key),
            cpu=[cpu.mean],
            cpu_peak=[cpu.peak],
            late_max=rec.late_max,
            late=rec.late,
            config=config,
        )

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def completed(self) -> int:
        return self.ok + self.error_count

    @property
    def throughput(self) -> float:
        """Answers (served or not) per second."""
        return self.completed / self.duration if self.duration > 0 else 0.0

    @property
    def ok_throughput(self) -> float:
        """Served answers per second."""
        return self.ok / self.duration if self.duration > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        """Errors and drops over everything scheduled."""
        total = self.sent + self.dropped
        return (self.error_count + self.dropped) / total if total else 0.0

    @property
    def saturated(self) -> bool:
        """True when a client process was CPU-bound: its figures are the generator's."""
        return any(c >= SATURATED for c in self.cpu + self.cpu_peak)

    def percentile(self, p: float) -> float | None:
        """Latency of served answers at percentile ``p``, in ms (None if none served)."""
        return self.ok_latency.percentile_ms(p)

    def p99(self) -> float | None:
        return self.ok_latency.p99()

    def warnings(self) -> list[str]:
        out = []
        if self.saturated:
            busiest = max(self.cpu + self.cpu_peak)
            out.append(
                f"load generator CPU-bound (a client process {busiest:.0%} busy): figures"
                " may show the generator's limit, not the server's; add --procs"
            )
        if self.dropped:
            out.append(f"{self.dropped} requests dropped by the generator (in-flight cap reached)")
        if self.late_max > 0.05:
            out.append(f"{self.late} sends late, up to {self.late_max * 1000:.0f} ms behind schedule")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "error_count": self.error_count,
            "dropped": self.dropped,
            "duration_s": self.duration,
            "throughput_rps": self.throughput,
            "ok_throughput_rps": self.ok_throughput,
            "latency_ms": self.ok_latency.summary(),
            "error_latency_ms": self.error_latency.summary(),
            "error_latency_by_key_ms": {k: v.summary() for k, v in sorted(self.error_latency_by_key.items())},
            "generator": {
                "cpu": self.cpu,
                "cpu_peak": self.cpu_peak,
                "saturated": self.saturated,
                "late_max_ms": self.late_max * 1000.0,
                "late": self.late,
            },
            "warnings": self.warnings(),
            "histograms": {
                "ok": self.ok_latency.encode(),
                "error": self.error_latency.encode(),
                "error_by_key": {k: v.encode() for k, v in sorted(self.error_latency_by_key.items())},
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadResult:
        hist = d.get("histograms") or {}
        gen = d.get("generator") or {}
        return cls(
            sent=int(d["sent"]),
            ok=int(d["ok"]),
            errors={str(k): int(v) for k, v in (d.get("errors") or {}).items()},
            dropped=int(d.get("dropped", 0)),
            duration=float(d["duration_s"]),
            ok_latency=Latency.decode(hist.get("ok", "")),
            error_latency=Latency.decode(hist.get("error", "")),
            error_latency_by_key={str(k): Latency.decode(v) for k, v in (hist.get("error_by_key") or {}).items()},
            cpu=[float(c) for c in gen.get("cpu", [])],
            cpu_peak=[float(c) for c in gen.get("cpu_peak", [])],
            late_max=float(gen.get("late_max_ms", 0.0)) / 1000.0,
            late=int(gen.get("late", 0)),
            config=dict(d.get("config") or {}),
        )

    @classmethod
    def merge(cls, results: Iterable[LoadResult], config: dict[str, Any]) -> LoadResult:
        """Sums the results of processes that ran side by side (durations overlap)."""
        merged = cls(sent=0, ok=0, errors={}, dropped=0, duration=0.0, config=config)
        errors: Counter[str] = Counter()
        for r in results:
            merged.sent += r.sent
            merged.ok += r.ok
            merged.dropped += r.dropped
            errors.update(r.errors)
            merged.duration = max(merged.duration, r.duration)
            merged.ok_latency.add(r.ok_latency)
            merged.error_latency.add(r.error_latency)
            for key, lat in r.error_latency_by_key.items():
                merged.error_latency_by_key.setdefault(key, Latency()).add(lat)
            merged.cpu.extend(r.cpu)
            merged.cpu_peak.extend(r.cpu_peak)
            merged.late_max = max(merged.late_max, r.late_max)
            merged.late += r.late
        merged.errors = dict(errors)
        return merged


def percentile_row(lat: Latency) -> list[float | None]:
    """p50, p90, p99, p99.9 and max in ms: the columns of every report."""
    return [lat.percentile_ms(p) for p in PERCENTILES] + [lat.max_ms()]
