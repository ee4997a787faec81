"""What the deployer prints: rich tables for people, one JSON document for scripts.

Results go to stdout (a table, or with `--json` one JSON document and nothing else);
progress bars, notes and errors go to stderr, so `apinode deploy ... --json | jq` works.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from deployer.models import NodeStatus, ServiceState, TestQueryResult, Tuning, to_json
from deployer.rollout import NodeOutcome

PROG = "apinode deploy"


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # CI logs are no terminal: a wide fixed width keeps table rows on one line.
    width = None if stream.isatty() else 160
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(to_json(data), indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def show(self, renderable: Any) -> None:
        if not self.json_mode:
            self.out.print(renderable)

    def note(self, message: str) -> None:
        """A human note: stdout normally, stderr in JSON mode (stdout is for the document)."""
        if self.quiet:
            return
        (self.err if self.json_mode else self.out).print(message)

    def error(self, message: str, prog: str = PROG) -> None:
        self.err.print(f"{escape(prog)}: {escape(message)}", style="red", soft_wrap=True)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


def services_table(services: Sequence[ServiceState], node: str) -> Table:
    t = Table(title=f"services on {node}", title_justify="left")
    for col in ("service", "enabled", "generation", "loaded", "active", "share", "sha256", "stored at"):
        t.add_column(col, justify="right" if col == "share" else "left")
    t.add_column("mode")
    for s in services:
        if not s.generations:
            t.add_row(s.service, _yes(s.enabled), "-", "", "", "", "", "", s.mapping.mode)
        for i, g in enumerate(s.generations):
            t.add_row(
                escape(s.service) if i == 0 else "",
                _yes(s.enabled) if i == 0 else "",
                escape(g.generation),
                _yes(g.loaded),
                _yes(g.active),
                f"{g.share:.0%}" if g.active else "",
                g.sha256[:12],
                g.stored_at,
                s.mapping.mode if i == 0 else "",
            )
    return t


def status_table(status: NodeStatus, node: str) -> Table:
    ready = "[green]ready[/]" if status.ready else "[red]not ready[/]"
    t = Table(title=f"{node}: {ready}", title_justify="left")
    t.add_column("service / endpoint @ generation")
    t.add_column("type")
    t.add_column("ready")
    for col in ("busy", "idle", "starting", "queue", "served", "rejected", "timed out", "crashed", "restarts"):
        t.add_column(col, justify="right")
    for e in status.endpoints:
        ready_cell = _yes(True) if e.ready else f"[red]no[/] {escape(e.not_ready_reason)}"
        t.add_row(
            escape(f"{e.service}/{e.endpoint} @ {e.generation}"),
            e.type,
            ready_cell,
            *(str(v) for v in (e.workers_busy, e.workers_idle, e.workers_starting, e.queue_depth)),
            *(str(v) for v in (e.served, e.rejected, e.timed_out, e.crashed, e.restarts)),
        )
    return t


def _short(value: Any, limit: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tests_table(results: Sequence[TestQueryResult], title: str) -> Table:
    with_generation = any(r.generation for r in results)
    t = Table(title=title, title_justify="left")
    t.add_column("endpoint")
    t.add_column("#", justify="right")
    t.add_column("result")
    t.add_column("ms", justify="right")
    if with_generation:
        t.add_column("generation")
    t.add_column("response / error")
    for r in results:
        cells = [escape(r.endpoint), str(r.index), "[green]ok[/]" if r.ok else "[red]FAILED[/]"]
        cells.append(f"{r.latency_ms:.1f}")
        if with_generation:
            cells.append(escape(r.generation))
        cells.append(escape(_short(r.response) if r.ok else r.error))
        t.add_row(*cells)
    return t


def tests_summary(results: Sequence[TestQueryResult]) -> str:
    failed = sum(not r.ok for r in results)
    if not results:
        return "no test queries"
    lat = sorted(r.latency_ms for r in results)
    median = lat[len(lat) // 2]
    verdict = "[green]all passed[/]" if not failed else f"[red]{failed} failed[/]"
    return f"{len(results)} test queries: {verdict} (median {median:.1f} ms, max {lat[-1]:.1f} ms)"


def tuning_table(tuning: Tuning) -> Table:
    t = Table(title=f"pool of {tuning.service}/{tuning.endpoint}", title_justify="left")
    t.add_column("setting")
    t.add_column("value", justify="right")
    for k, v in tuning.pool.items():
        t.add_row(escape(k), str(v))
    return t


def rollout_table(outcomes: Sequence[NodeOutcome], title: str) -> Table:
    colors = {"ok": "green", "failed": "red", "not restored": "red", "rolled back": "yellow"}
    t = Table(title=title, title_justify="left")
    for col in ("node", "grpc", "result", "step", "generation", "tests", "detail"):
        t.add_column(col)
    for o in outcomes:
        color = colors.get(o.status, "dim")
        tests = f"{o.tests_passed}/{o.tests_total}" if o.tests_total else ""
        t.add_row(
            escape(o.node),
            o.target,
            f"[{color}]{o.status}[/]",
            o.step,
            escape(o.generation),
            tests,
            escape(o.message),
        )
    return t


@contextlib.contextmanager
def upload_bar(console: Console, label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for an upload; yields the `(sent, total)` callback the client calls.

    Once every byte is sent the bar says the node is verifying, loading and testing, which
    is where a push spends its remaining time.
    """
    if not enabled or not console.is_terminal:
        yield lambda sent, total: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(escape(label), total=None)

        def update(sent: int, total: int) -> None:
            done = sent >= total
            desc = f"{label}: node verifying, loading, testing…" if done else label
            bar.update(task, completed=sent, total=total, description=escape(desc))

        yield update
