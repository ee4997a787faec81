"""A sweep: the same load at growing concurrency (closed loop) or rate (open loop).

Each step is a full :func:`loadtest.runner.run` with the knob set to the step's value. With
a latency objective (p99 of served answers under a bound, and optionally an error budget),
the sweep stops at the first step that breaks it (more load would only break it more) and
names the best passing step: the one that served the most answers per second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from loadtest.config import LoadConfig
from loadtest.result import LoadResult
from loadtest.runner import ProgressFn, run


@dataclass(frozen=True, slots=True)
class Slo:
    """What a step must keep to pass. ``p99``: seconds; ``max_error_ratio``: 0..1."""

    p99: float | None = None
    max_error_ratio: float | None = None

    @property
    def active(self) -> bool:
        return self.p99 is not None or self.max_error_ratio is not None

    def check(self, result: LoadResult) -> bool:
        if result.ok == 0:
            return False
        p99 = result.p99()
        if self.p99 is not None and (p99 is None or p99 > self.p99 * 1000.0):
            return False
        return not (self.max_error_ratio is not None and result.error_ratio > self.max_error_ratio)

    def describe(self) -> str:
        parts = []
        if self.p99 is not None:
            parts.append(f"p99 <= {self.p99 * 1000:g} ms")
        if self.max_error_ratio is not None:
            parts.append(f"errors <= {self.max_error_ratio:.1%}")
        return " and ".join(parts) or "none"


@dataclass(slots=True)
class SweepStep:
    value: float  # the concurrency or the rate of this step
    result: LoadResult
    passed: bool | None  # None when the sweep has no objective


@dataclass(slots=True)
class SweepResult:
    knob: str  # "concurrency" | "rate"
    slo: Slo
    steps: list[SweepStep] = field(default_factory=list)
    planned: list[float] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return len(self.steps) < len(self.planned)

    @property
    def best(self) -> SweepStep | None:
        """The passing step with the highest served throughput (any step without an SLO)."""
        ok = [s for s in self.steps if s.passed is not False]
        return max(ok, key=lambda s: s.result.ok_throughput, default=None)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "knob": self.knob,
            "slo": {
                "p99_ms": None if self.slo.p99 is None else self.slo.p99 * 1000.0,
                "max_error_ratio": self.slo.max_error_ratio,
            },
            "planned": self.planned,
            "stopped_early": self.stopped_early,
            "best": None
            if best is None
            else {
                "value": best.value,
                "ok_throughput_rps": best.result.ok_throughput,
                "p99_ms": best.result.p99(),
            },
            "steps": [{"value": s.value, "passed": s.passed, "result": s.result.to_dict()} for s in self.steps],
        }


def step_config(config: LoadConfig, value: float) -> LoadConfig:
    """``config`` with its knob at ``value``: the rate in open loop, else the concurrency."""
    if config.open_loop:
        return replace(config, rate=float(value))
    return replace(config, concurrency=max(1, int(value)))


StepProgress = Callable[[float], AbstractContextManager[ProgressFn | None]]


def run_sweep(
    config: LoadConfig,
    steps: Sequence[float],
    slo: Slo | None = None,
    *,
    on_step: Callable[[SweepStep], None] | None = None,
    step_progress: StepProgress | None = None,
) -> SweepResult:
    """Runs each step in order; stops at the first step that breaks an active ``slo``.

    ``on_step`` sees each step as it ends (to print its row); ``step_progress(value)``, if
    given, is entered around each step and yields that step's progress callback.
    """
    slo = slo or Slo()
    sweep = SweepResult(knob="rate" if config.open_loop else "concurrency", slo=slo, planned=list(steps))
    for value in steps:
        with step_progress(value) if step_progress else nullcontext() as progress:
            result = run(step_config(config, value), progress=progress)
        step = SweepStep(value, result, slo.check(result) if slo.active else None)
        sweep.steps.append(step)
        if on_step is not None:
            on_step(step)
        if step.passed is False:
            break
    return sweep
