"""PNG charts of a run or a sweep (matplotlib, Agg backend: no display needed).

A sweep: latency percentiles of served answers per step (log scale, the objective as a
dashed line, failing steps marked) and served throughput on a second axis. A single run:
its latency spectrum, percentile against latency on a "nines" axis (90, 99, 99.9, ...),
where tail behaviour is visible, for served answers and errors.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from loadtest.result import LoadResult
from loadtest.stats import Latency
from loadtest.sweep import SweepResult

_SERIES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


# matplotlib is the optional extra `plot` (the container image leaves it out: it is large).
MISSING = "--plot needs matplotlib, which is not installed: pip install 'apinode[plot]'"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    if not available():
        raise RuntimeError(MISSING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(sweep: SweepResult, path: str | Path, title: str | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    try:
        xs = [s.value for s in sweep.steps]
        for label, p in _SERIES:
            ys = [s.result.percentile(p) for s in sweep.steps]
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=label)
        if sweep.slo.p99 is not None:
            ax.axhline(sweep.slo.p99 * 1000.0, color="red", linestyle="--", label="p99 objective")
        failed = [s for s in sweep.steps if s.passed is False]
        for s in failed:
            ax.axvline(s.value, color="red", alpha=0.2, linewidth=8)
        ax.set_xlabel("concurrency" if sweep.knob == "concurrency" else "offered rate (req/s)")
        ax.set_ylabel("latency of served answers (ms)")
        ax.set_yscale("log")
        if len(xs) > 1 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2 if sweep.knob == "concurrency" else 10)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        _plain_numbers(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        tput = ax.twinx()
        tput.plot(
            xs,
            [s.result.ok_throughput for s in sweep.steps],
            color="black",
            marker="s",
            linestyle=":",
            label="ok/s",
        )
        tput.set_ylabel("served answers per second")
        tput.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        more = tput.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize="small")
        best = sweep.best
        subtitle = f"best {sweep.knob} {best.value:g}" if best else "no step met the objective"
        ax.set_title(f"{title or 'load sweep'}: {subtitle}")
        fig.tight_layout()
        fig.savefig(str(path), format="png")
    finally:
        plt.close(fig)


def _plain_numbers(axis: Any) -> None:
    """Log axes label 3 and 20 ms as such, not as 3e0 and 2e1.

    Minor ticks get labels only when the axis spans less than two decades (else they crowd).
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    axis.set_major_formatter(fmt)
    lo, hi = axis.get_view_interval()
    few = lo > 0 and hi / lo < 100
    axis.set_minor_formatter(fmt if few else NullFormatter())


def _nines(p: float) -> float:
    return -math.log10(max(1.0 - p / 100.0, 1e-6))


def plot_result(result: LoadResult, path: str | Path, title: str | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    try:
        for label, lat in (("ok", result.ok_latency), ("errors", result.error_latency)):
            _spectrum(ax, lat, label)
        ticks = [0.0, 1.0, 2.0, 3.0, 4.0]
        ax.set_xticks(ticks, ["0%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        _plain_numbers(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left")
        ax.set_title(
            f"{title or 'load run'}: {result.ok_throughput:,.0f} ok/s,"
            f" {result.error_count} errors, {result.dropped} dropped"
        )
        fig.tight_layout()
        fig.savefig(str(path), format="png")
    finally:
        plt.close(fig)


def _spectrum(ax: Any, lat: Latency, label: str) -> None:
    points = lat.spectrum()
    if points:
        ax.plot([_nines(p) for p, _ in points], [ms for _, ms in points], label=label)
