"""Prediction explanations, computed in the worker with the endpoint's ONNX model.

Both methods perturb the *input* features (what callers send, before any pipeline step
of the model), so a one-hot encoded column is one feature here, never several. They work
against the background: rows of the sample stored in the package at compile time.

- SHAPLEY: Monte Carlo permutation sampling (Štrumbelj & Kononenko). Step s draws a
  feature order and takes background row z_s; walking the order, feature j's marginal
  contribution is f(z with the features before j and j itself taken from x) minus f(the
  same without j). The walk ends at f(x), so each step's contributions add up to
  f(x) - f(z_s); steps cycle through a shuffled background, and every other step walks
  the previous order backwards (antithetic sampling: less variance for the same cost).
  With a step count that is a multiple of the background size, the contributions add up
  to f(x) - E_background[f] exactly.
- ICE: feature j's contribution is f(x) - mean_z f(x with x_j replaced by z_j): how
  much the prediction moves, on average, when the feature takes the background's values.

Every perturbed row of a batch goes to the model in one `session.run` (the caller
concatenates the plans). The random draws are seeded from the request's row, method and
step count, so the same request always gets the same explanations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("SHAPLEY", "ICE")


@dataclass(frozen=True, slots=True)
class Job:
    """One row to explain, as the front sends it in place of the plain row."""

    method: str
    k: int
    steps: int


@dataclass(slots=True)
class Plan:
    job: Job
    rows: np.ndarray  # object array (n, F): the perturbed rows to predict
    pos: np.ndarray | None  # SHAPLEY: (steps, F) position of each feature in the step's order
    bg: np.ndarray | None  # SHAPLEY: (steps,) background row index of each step


def seed_of(row: list[Any], job: Job) -> int:
    """A seed that depends only on what was asked (repr is exact for floats and stable)."""
    digest = hashlib.blake2b(repr((row, job.method, job.steps)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def plan(x: np.ndarray, job: Job, background: np.ndarray) -> Plan:
    """The rows to predict to explain `x` (an object array of F values)."""
    n_bg, nf = background.shape
    if job.method == "ICE":
        # row (j, b): x with feature j from background row b
        rows = np.repeat(x[None, None, :], nf, axis=0).repeat(n_bg, axis=1)
        for j in range(nf):
            rows[j, :, j] = background[:, j]
        return Plan(job, rows.reshape(nf * n_bg, nf), None, None)
    rng = np.random.default_rng(seed_of(x.tolist(), job))
    m = job.steps
    order = np.empty((m, nf), dtype=np.int64)
    for s in range(m):
        order[s] = order[s - 1][::-1] if s % 2 else rng.permutation(nf)
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(nf)[None, :].repeat(m, axis=0), axis=1)
    cycles = -(-m // n_bg)
    bg = np.concatenate([rng.permutation(n_bg) for _ in range(cycles)])[:m]
    # Row t (1..F-1) of step s holds the features whose position is < t from x, the
    # others from z_s; t = 0 is z_s and t = F is x, both predicted once elsewhere.
    t = np.arange(1, nf)[None, :, None]
    mask = pos[:, None, :] < t
    rows = np.where(mask, x[None, None, :], background[bg][:, None, :])
    return Plan(job, rows.reshape(m * (nf - 1), nf), pos, bg)


def contributions(p: Plan, fx: float, values: np.ndarray, bg_values: np.ndarray) -> np.ndarray:
    """Per-feature contributions from the predicted target of the plan's rows."""
    nf = p.rows.shape[1]
    if p.job.method == "ICE":
        n_bg = bg_values.shape[0]
        return np.asarray(fx - values.reshape(nf, n_bg).mean(axis=1), dtype=np.float64)
    assert p.pos is not None and p.bg is not None
    m = p.pos.shape[0]
    walk = np.empty((m, nf + 1), dtype=np.float64)
    walk[:, 0] = bg_values[p.bg]
    walk[:, 1:nf] = values.reshape(m, nf - 1)
    walk[:, nf] = fx
    gain = np.diff(walk, axis=1)  # gain[s, t]: the feature at position t of step s
    return np.asarray(np.take_along_axis(gain, p.pos, axis=1).mean(axis=0), dtype=np.float64)


def strongest(names: list[str], phi: np.ndarray, k: int) -> dict[str, float]:
    """The k contributions of largest magnitude, strongest first (ties: feature order)."""
    order = np.argsort(-np.abs(phi), kind="stable")[:k]
    return {names[j]: float(phi[j]) for j in order}
