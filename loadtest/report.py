"""Terminal and JSON reports, and the live progress line.

Every run prints the same row: load (concurrency or rate), counts, throughput, latency
percentiles of served answers, p99 of errors, and the busiest client process's CPU. A
sweep prints one row per step as it finishes, then the best passing step. The progress
line lives on stderr and disappears when the step ends, so the table on stdout stays
clean; it is off when stderr is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtest.result import LoadResult, percentile_row
from loadtest.runner import Progress
from loadtest.sweep import SweepResult, SweepStep

_COLUMNS = {  # name: width of its text (a space of padding goes left of all but the first)
    "load": 10,
    "sent": 9,
    "ok": 9,
    "errors": 7,
    "dropped": 7,
    "ok/s": 8,
    "p50 ms": 7,
    "p90 ms": 7,
    "p99 ms": 7,
    "p99.9 ms": 8,
    "max ms": 7,
    "err p99": 7,
    "cpu": 4,
    "slo": 4,
}
# What still fits in 80 columns.
_NARROW = ("load", "ok", "errors", "ok/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "cpu", "slo")
_PIPE_WIDTH = 160  # not a terminal: no reason to squeeze the table into 80 columns


def make_console(stderr: bool = False) -> Console:
    """A console for the tables: the terminal's width, or a wide one when piped."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return console


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:.0f}"


def _load_label(result: LoadResult) -> str:
    c = result.config
    if c.get("rate") is not None:
        return f"{c['rate']:g}/s" + (" P" if c.get("poisson") else "")
    return f"c={c.get('concurrency')}"


def _cells(result: LoadResult, passed: bool | None) -> dict[str, str]:
    busiest = max(result.cpu + result.cpu_peak, default=0.0)
    p50, p90, p99, p999, top = (fmt_ms(v) for v in percentile_row(result.ok_latency))
    return {
        "load": _load_label(result),
        "sent": str(result.sent),
        "ok": str(result.ok),
        "errors": f"[red]{result.error_count}[/]" if result.error_count else "0",
        "dropped": f"[yellow]{result.dropped}[/]" if result.dropped else "0",
        "ok/s": f"{result.ok_throughput:,.0f}",
        "p50 ms": p50,
        "p90 ms": p90,
        "p99 ms": p99,
        "p99.9 ms": p999,
        "max ms": top,
        "err p99": fmt_ms(result.error_latency.p99()),
        "cpu": f"[red]{busiest:.0%}[/]" if result.saturated else f"{busiest:.0%}",
        "slo": {True: "[green]ok[/]", False: "[red]FAIL[/]", None: ""}[passed],
    }


def _columns(width: int) -> list[str]:
    full = sum(_COLUMNS.values()) + len(_COLUMNS)
    return list(_COLUMNS) if width >= full else list(_NARROW)


def print_row(console: Console, result: LoadResult, passed: bool | None = None, header: bool = False) -> None:
    """One row of the common table (with the header above it when asked)."""
    names = _columns(console.width)
    table = Table(
        show_header=header,
        box=None,
        pad_edge=False,
        collapse_padding=True,
        padding=(0, 0, 0, 1),
        header_style="bold",
    )
    for i, name in enumerate(names):
        # Fixed widths (padding included), so that rows printed one by one line up.
        width = _COLUMNS[name] + (1 if i else 0)
        table.add_column(name, justify="right", width=width, no_wrap=True)
    cells = _cells(result, passed)
    table.add_row(*(cells[n] for n in names))
    console.print(table)


def print_details(console: Console, result: LoadResult) -> None:
    """The errors by key and the generator's warnings, under a row."""
    if result.errors:
        text = ", ".join(f"{k}: {v}" for k, v in sorted(result.errors.items()))
        console.print(f"  errors: {text}")
    for warning in result.warnings():
        console.print(f"  [yellow]warning:[/] {warning}")


def print_result(console: Console, result: LoadResult, title: str | None = None) -> None:
    if title:
        console.print(f"[bold]{title}[/]")
    print_row(console, result, header=True)
    console.print(
        f"  {result.completed} answers in {result.duration:.2f}s:"
        f" {result.throughput:,.0f} req/s, {result.ok_throughput:,.0f} ok/s"
    )
    print_details(console, result)


def print_step(console: Console, step: SweepStep, first: bool) -> None:
    print_row(console, step.result, step.passed, header=first)
    print_details(console, step.result)


def print_sweep_summary(console: Console, sweep: SweepResult) -> None:
    best = sweep.best
    if sweep.slo.active:
        console.print(f"objective: {sweep.slo.describe()}")
    if sweep.stopped_early:
        last = sweep.steps[-1]
        console.print(f"stopped at {sweep.knob} {last.value:g}: objective broken")
    if best is None:
        console.print("[red]no step met the objective[/]")
    else:
        console.print(
            f"[bold]best: {sweep.knob} {best.value:g}[/] → {best.result.ok_throughput:,.0f} ok/s,"
            f" p99 {fmt_ms(best.result.p99())} ms"
        )


def write_json(dest: str, data: dict[str, Any]) -> None:
    """``dest`` is a file path, or ``-`` for stdout."""
    blob = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    if dest == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
    else:
        Path(dest).write_bytes(blob)


class ProgressLine:
    """The live line on stderr: phase, elapsed time, counts and current rate."""

    def __init__(self, console: Console, label: str) -> None:
        self._label = label
        self._live = Live(console=console, transient=True, refresh_per_second=4)
        self._last: tuple[str, float, int] = ("", 0.0, 0)

    def __call__(self, p: Progress) -> None:
        phase, t, done = self._last
        if phase != p.phase:  # a new phase counts from zero
            t, done = 0.0, 0
        now_done = p.ok + p.errors
        rate = (now_done - done) / (p.elapsed - t) if p.elapsed > t else 0.0
        self._last = (p.phase, p.elapsed, now_done)
        line = Text.from_markup(
            f"[bold]{self._label}[/] {p.phase} {p.elapsed:5.1f}s  sent {p.sent:,}  ok {p.ok:,}"
            f"  errors {p.errors:,}  dropped {p.dropped:,}  {rate:,.0f} req/s"
        )
        self._live.update(line)

    @contextmanager
    def shown(self) -> Iterator[ProgressLine]:
        self._live.start()
        try:
            yield self
        finally:
            self._live.stop()


@contextmanager
def progress_line(enabled: bool, label: str) -> Iterator[ProgressLine | None]:
    """A progress line on stderr when ``enabled`` and stderr is a terminal, else None."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    with ProgressLine(console, label).shown() as line:
        yield line
