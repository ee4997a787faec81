"""The front's side of explanations and probaPercentile.

`job(spec, asked)` reads a request's :class:`~node.ops.Explanations` (the Dataiku client's
`{"enabled", "method", "nExplanations", "nMonteCarloSteps"}`, nulls meaning the endpoint's
defaults; errors name those fields) against the endpoint's settings, and says what the worker should compute, or
None. The worker computes them (:mod:`node.worker.explain`); `wrap` turns a row into the
row-with-a-job the worker recognises. `percentile` places a binary classifier's positive
probability among the sample's (the package's `proba_percentiles`).
"""

from __future__ import annotations

import bisect
from typing import Any

from apz.specs import EndpointSpec
from node import errors
from node.ops import Explanations

METHODS = ("SHAPLEY", "ICE")
# Perturbed model rows one request may cost (items x steps x features for SHAPLEY; ICE's
# cost is bounded by the background, at most this many rows per item times the features).
# The worker runs them in bounded groups, but batched with other requests, so one request
# must not occupy a worker for minutes: past this it is refused before anything runs.
MAX_EXPLAINED_ROWS = 20_000_000
ICE_BACKGROUND_BOUND = 1000


def _int(v: Any, key: str, default: int) -> int:
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise errors.BadRequest(f"explanations.{key} must be a positive integer or null, got {v!r}")
    return v


def job(spec: EndpointSpec, asked: Explanations | None) -> dict[str, Any] | None:
    """The explanation job of a predict / predict-multi request, or None (not asked)."""
    asked = asked or Explanations()
    enabled = asked.enabled
    if enabled is not None and not isinstance(enabled, bool):
        raise errors.BadRequest(f"explanations.enabled must be true, false or null, got {enabled!r}")
    if spec.type == "custom-prediction":
        if enabled:
            raise errors.NotSupported(
                "explanations are not supported for custom-prediction endpoints (only for compiled "
                "models): send explanations.enabled false or null"
            )
        return None
    settings = spec.explanations
    defaulted = enabled is None
    if defaulted:
        enabled = bool(settings and settings.by_default)
    if not enabled:
        return None
    if defaulted and (settings is None or not settings.background or not settings.enabled):
        return None  # the endpoint's default cannot apply: answered without, never refused
    if settings is None or not settings.background:
        raise errors.NotSupported(
            f"endpoint {spec.id!r} has no explanation background: its package was compiled without "
            "a sample (add 'sample:' to the endpoint in service.yaml and rebuild)"
        )
    if not settings.enabled:
        raise errors.NotSupported(
            f"explanations are disabled on endpoint {spec.id!r} (service.yaml: explanations.enabled: false)"
        )
    method = asked.method
    if method is None:
        method = settings.method
    if method not in METHODS:
        raise errors.BadRequest(f"explanations.method must be one of {', '.join(METHODS)} or null, got {method!r}")
    k = min(_int(asked.n_explanations, "nExplanations", settings.n_explanations), len(spec.features))
    steps = _int(asked.n_monte_carlo_steps, "nMonteCarloSteps", settings.mc_steps)
    cap = settings.max_mc_steps
    if steps > cap and method == "SHAPLEY":  # ICE takes no steps: nothing to refuse
        raise errors.BadRequest(
            f"explanations.nMonteCarloSteps is {steps}; endpoint {spec.id!r} allows at most {cap} "
            "(service.yaml: explanations.max_mc_steps)"
        )
    return {"method": method, "k": k, "steps": steps}


def check_cost(spec: EndpointSpec, task: dict[str, Any] | None, items: int) -> None:
    """Refuses a request whose explanations would cost more than MAX_EXPLAINED_ROWS model rows."""
    if task is None:
        return
    per_feature = task["steps"] if task["method"] == "SHAPLEY" else ICE_BACKGROUND_BOUND
    cost = items * per_feature * max(1, len(spec.features))
    if cost > MAX_EXPLAINED_ROWS:
        raise errors.PayloadTooLarge(
            f"explaining {items} items with {task['method']} ({task['steps']} steps, {len(spec.features)} features) "
            f"would run some {cost:,} model rows; one request may run at most {MAX_EXPLAINED_ROWS:,}: "
            "send fewer items per call or fewer nMonteCarloSteps"
        )


def wrap(row: list[Any], task: dict[str, Any] | None) -> Any:
    """The row as the worker receives it: with the explanation job when there is one."""
    return row if task is None else {"row": row, **task}


def percentile(sorted_probas: tuple[float, ...], p: float) -> int:
    """Where `p` ranks among the sample's probabilities, 0-100 (ties count half). The
    package stores them rounded to 7 decimals, so `p` is compared rounded alike (a sample
    row's own probability must tie with itself)."""
    p = round(p, 7)
    lo = bisect.bisect_left(sorted_probas, p)
    hi = bisect.bisect_right(sorted_probas, p)
    return round(100 * (lo + hi) / (2 * len(sorted_probas)))
