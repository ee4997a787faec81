"""What `apinode compile` shows while it works: one line per step, warnings, the parity table.

Everything goes to stdout, so that stderr holds nothing but the one-line error of a failed
compilation. With `enabled=False` (library use, tests) nothing is printed and warnings are
only collected.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compiler.parity import ParityResult


class Reporter:
    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(highlight=False, soft_wrap=True) if enabled else None
        self.warnings: list[str] = []

    def step(self, text: str) -> None:
        if self.console:
            self.console.print(f"[bold cyan]•[/] {escape(text)}")

    def note(self, text: str) -> None:
        if self.console:
            self.console.print(f"  [dim]{escape(text)}[/]")

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.console:
            self.console.print(f"[bold yellow]warning:[/] [yellow]{escape(text)}[/]")

    def parity_table(self, results: list[ParityResult]) -> None:
        if not self.console or not results:
            return
        table = Table(title="parity: ONNX vs scikit-learn", title_justify="left")
        table.add_column("endpoint")
        table.add_column("rows", justify="right")
        table.add_column("inputs")
        table.add_column("same classes")
        table.add_column("max |Δproba| / rel. err", justify="right")
        table.add_column("result")
        for r in results:
            if r.rows == 0:
                table.add_row(r.endpoint, "0", r.precision, "-", "-", "[bold yellow]NOT CHECKED[/]")
                continue
            if r.task == "regression":
                identical, err = "-", f"{r.max_rel_error:.2e} rel"
            else:
                identical = "[green]yes[/]" if r.classes_identical else "[red]no[/]"
                err = f"{r.max_abs_proba_diff:.2e}"
            result = f"[green]ok[/] ≤ {r.tolerance:.0e}" if r.passed else "[red]FAILED[/]"
            table.add_row(r.endpoint, f"{r.rows} {r.source}", r.precision, identical, err, result)
        self.console.print(table)

    def done(self, out: Path, size: int, sha256: str) -> None:
        if self.console:
            self.console.print(
                f"[bold green]✓[/] wrote {escape(str(out))} ({size / 1024:.1f} KiB, sha256 {sha256[:16]}…)"
            )
