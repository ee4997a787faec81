"""What a prediction package stores for explanations and probaPercentile.

- The explanation background: up to `background_rows` rows of the sample (a seeded
  shuffle, so a rebuild stores the same rows), in the node's row format, in the package
  file `models/<endpoint>.background.json`. The worker perturbs requests against it.
- `proba_percentiles` (binary classifiers): the sorted probabilities of the positive class
  over the sample rows (at most `MAX_PERCENTILE_POINTS`, evenly spaced in rank), so the
  node can say where a result's probability ranks among them.
- The endpoint's explanation settings from service.yaml, with their defaults.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from compiler.onnx_convert import Converted
from compiler.rows import onnx_feed
from compiler.schema import Feature

DEFAULTS: dict[str, Any] = {
    "enabled": True,  # false: requests asking for explanations are refused
    "by_default": False,  # compute them when a request leaves explanations.enabled null
    "method": "SHAPLEY",
    "n_explanations": 3,
    "mc_steps": 100,
    "max_mc_steps": 1000,
    "background_rows": 100,
}
MAX_PERCENTILE_POINTS = 1000


def settings_entry(
    eid: str, settings: dict[str, Any], rows: list[list[Any]], features: list[Feature]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest's `explanations` object and the background file it names (none
    without sample rows: nothing to explain against)."""
    entry = {k: v for k, v in {**DEFAULTS, **settings}.items() if k != "background_rows"}
    files: dict[str, bytes] = {}
    if rows:
        n = min(int(settings.get("background_rows", DEFAULTS["background_rows"])), len(rows))
        pick = sorted(np.random.default_rng(0).permutation(len(rows))[:n].tolist())
        strings = [f.type == "string" for f in features]
        background = [["" if s and v is None else v for s, v in zip(strings, rows[i], strict=True)] for i in pick]
        entry["background"] = f"models/{eid}.background.json"
        files[entry["background"]] = json.dumps(background).encode()
    return entry, files


def proba_percentiles(
    conv: Converted, features: list[Feature], rows: list[list[Any]], column: int
) -> list[float] | None:
    """The sorted positive-class (`column`) probabilities of a binary classifier over `rows`."""
    if not rows or conv.proba_output is None:
        return None
    feed = onnx_feed(features, conv.precision, conv.input_mode, conv.input_name, rows)
    probas = np.asarray(conv.session.run([conv.proba_output], feed)[0], dtype=np.float64)
    if probas.ndim != 2 or probas.shape[1] != 2:
        return None
    p = np.sort(probas[:, column])
    if len(p) > MAX_PERCENTILE_POINTS:
        p = p[np.linspace(0, len(p) - 1, MAX_PERCENTILE_POINTS).round().astype(int)]
    return [round(float(v), 7) for v in p]
