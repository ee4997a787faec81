"""Measurements: HDR latency histograms and the per-process recorder of a run.

Latencies are recorded in microseconds into an HdrHistogram (1 µs to 1 h, 3 significant
digits: 0.1% error at any scale, a few tens of KiB). Histograms of several processes are
merged by encoding them (compressed, base64) in the worker and adding them in the parent;
the same text goes into the JSON report so a later script can re-merge or re-read any
percentile.

:class:`Recorder` is what the hot loop touches: plain integer counters, one histogram for
answers that were served and one for errors (a rejection is fast, and mixing the two
would make an overloaded server look quick).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000
_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
LATE = 0.010  # open loop: a send this far behind its schedule counts as late


class Latency:
    """A latency histogram with accessors in milliseconds."""

    __slots__ = ("_h",)

    def __init__(self, hist: HdrHistogram | None = None) -> None:
        self._h = hist if hist is not None else HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)

    def record(self, seconds: float) -> None:
        us = int(seconds * 1e6)
        self._h.record_value(_LOWEST_US if us < _LOWEST_US else min(us, _HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile_ms(self, p: float) -> float | None:
        """The latency under which ``p`` percent of the answers came; None when empty."""
        if not self.count:
            return None
        return float(self._h.get_value_at_percentile(p)) / 1000.0

    def max_ms(self) -> float | None:
        return float(self._h.get_max_value()) / 1000.0 if self.count else None

    def min_ms(self) -> float | None:
        return float(self._h.get_min_value()) / 1000.0 if self.count else None

    def mean_ms(self) -> float | None:
        return float(self._h.get_mean_value()) / 1000.0 if self.count else None

    def p50(self) -> float | None:
        return self.percentile_ms(50.0)

    def p90(self) -> float | None:
        return self.percentile_ms(90.0)

    def p99(self) -> float | None:
        return self.percentile_ms(99.0)

    def p999(self) -> float | None:
        return self.percentile_ms(99.9)

    def add(self, other: Latency) -> None:
        if other.count:
            self._h.add(other._h)

    def encode(self) -> str:
        return str(self._h.encode().decode("ascii"))

    @classmethod
    def decode(cls, text: str) -> Latency:
        merged = cls()
        if text:
            merged._h.add(HdrHistogram.decode(text.encode("ascii")))
        return merged

    def spectrum(self, points: int = 60) -> list[tuple[float, float]]:
        """(percentile, ms) pairs from p0 to p99.99 on a log-of-nines scale, for plots."""
        if not self.count:
            return []
        out: list[tuple[float, float]] = []
        for i in range(points + 1):
            nines = 4.0 * i / points  # 0 → p0, 1 → p90, 2 → p99, 4 → p99.99
            p = 100.0 * (1.0 - 10.0**-nines)
            out.append((p, float(self._h.get_value_at_percentile(p)) / 1000.0))
        return out

    def summary(self) -> dict[str, float | int | None]:
        """Count and percentiles in ms, with the keys used in JSON reports."""
        return {
            "count": self.count,
            "min": self.min_ms(),
            "mean": self.mean_ms(),
            "p50": self.p50(),
            "p90": self.p90(),
            "p99": self.p99(),
            "p99.9": self.p999(),
            "max": self.max_ms(),
        }


@dataclass(slots=True)
class Recorder:
    """Counters and histograms of one process's measured phase.

    ``sent`` counts requests handed to the transport; each ends as exactly one ``ok`` or
    one error. ``dropped`` counts open-loop requests the generator could not send
    (in-flight cap reached): they are never sent, and never silently lost.
    """

    sent: int = 0
    ok: int = 0
    dropped: int = 0
    late_max: float = 0.0  # open loop: how far behind schedule a send went, in seconds
    late: int = 0  # open loop: sends more than LATE behind schedule
    errors: Counter[str] = field(default_factory=Counter)
    ok_latency: Latency = field(default_factory=Latency)
    error_latency: Latency = field(default_factory=Latency)
    # Per error key too: a 503 answered at once and a client timeout are different stories.
    error_latency_by_key: dict[str, Latency] = field(default_factory=dict)

    def record(self, error: str | None, seconds: float) -> None:
        if error is None:
            self.ok += 1
            self.ok_latency.record(seconds)
        else:
            self.errors[error] += 1
            self.error_latency.record(seconds)
            lat = self.error_latency_by_key.get(error)
            if lat is None:
                lat = self.error_latency_by_key[error] = Latency()
            lat.record(seconds)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def done(self) -> int:
        return self.ok + self.error_count
