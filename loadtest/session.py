"""One `apinode loadtest` invocation: run, show, save.

The CLI parses; this module drives a single run or a sweep with the progress line, prints
the table (on stdout, or stderr when the JSON goes to stdout), writes the JSON and the
plot, and turns the outcome into the exit status.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager

from rich.console import Console

from loadtest.config import ConfigError, LoadConfig, LoadError
from loadtest.report import (
    make_console,
    print_result,
    print_step,
    print_sweep_summary,
    progress_line,
    write_json,
)
from loadtest.runner import ProgressFn, run
from loadtest.sweep import Slo, SweepStep, run_sweep

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SLO = 0, 1, 2, 3


def run_session(config: LoadConfig, args: argparse.Namespace) -> int:
    console = make_console(stderr=args.json == "-")
    slo = Slo(p99=args.slo_p99, max_error_ratio=args.max_errors)
    console.print(f"[dim]{_headline(config, args)}[/]")
    try:
        if args.sweep:
            return _sweep(console, config, args, slo)
        return _single(console, config, args, slo)
    except ConfigError as exc:  # found late, e.g. a body gRPC cannot encode
        print(f"apinode loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadError as exc:
        print(f"apinode loadtest: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _headline(config: LoadConfig, args: argparse.Namespace) -> str:
    bounds = []
    if config.duration is not None:
        bounds.append(f"{config.duration:g}s")
    if config.requests is not None:
        bounds.append(f"{config.requests} requests")
    loop = f"open loop {'Poisson' if config.poisson else 'constant'}" if config.open_loop else "closed loop"
    knob = "sweep " + ",".join(f"{v:g}" for v in args.sweep) if args.sweep else None
    parts = [config.target.describe(), loop, knob, " or ".join(bounds), f"{config.procs} proc"]
    return "  ".join(p for p in parts if p)


def _single(console: Console, config: LoadConfig, args: argparse.Namespace, slo: Slo) -> int:
    with progress_line(not args.quiet, _label(config, config.step_value())) as line:
        result = run(config, progress=line)
    print_result(console, result)
    passed = slo.check(result) if slo.active else None
    if passed is not None:
        verdict = "[green]met[/]" if passed else "[red]broken[/]"
        console.print(f"objective {slo.describe()}: {verdict}")
    if args.json:
        write_json(args.json, result.to_dict())
    if args.plot:
        from loadtest.plot import plot_result

        plot_result(result, args.plot, title=config.target.describe())
    if result.ok == 0:  # nothing served: unreachable, or refusing everything
        return EXIT_FAILED
    return EXIT_SLO if passed is False else EXIT_OK


def _label(config: LoadConfig, value: float) -> str:
    return f"rate={value:g}/s" if config.open_loop else f"c={value:g}"


def _sweep(console: Console, config: LoadConfig, args: argparse.Namespace, slo: Slo) -> int:
    printed = 0

    def on_step(step: SweepStep) -> None:
        nonlocal printed
        print_step(console, step, first=printed == 0)
        printed += 1

    def step_progress(value: float) -> AbstractContextManager[ProgressFn | None]:
        return progress_line(not args.quiet, _label(config, value))

    sweep = run_sweep(config, args.sweep, slo, on_step=on_step, step_progress=step_progress)
    print_sweep_summary(console, sweep)
    if args.json:
        write_json(args.json, sweep.to_dict())
    if args.plot:
        from loadtest.plot import plot_sweep

        plot_sweep(sweep, args.plot, title=config.target.describe())
    if all(s.result.ok == 0 for s in sweep.steps):
        return EXIT_FAILED
    return EXIT_SLO if slo.active and sweep.best is None else EXIT_OK
