"""The compile-time parity check: the ONNX graph must answer as the original model does.

Both run on the same rows: the original through `predict` / `predict_proba` on a DataFrame
(or matrix) built from the rows, the graph through onnxruntime fed as the node feeds it.
Classifiers pass when every predicted class is identical and every probability is within
`tolerance` (absolute); regressions when every prediction is within `tolerance` relative to
max(|prediction|, 1e-3 * the largest |prediction|): the floor keeps values near 0 from
failing on float rounding. A failure names the worst row, its features and both answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.onnx_convert import Converted
from compiler.rows import onnx_feed, sklearn_input
from compiler.schema import Feature, ModelInfo

REL_FLOOR = 1e-3
TIE = 1e-12  # two probabilities this close are a tie: float rounding decides scikit-learn's pick


@dataclass(frozen=True, slots=True)
class ParityResult:
    endpoint: str
    task: str
    source: str  # sample | test_queries | none
    rows: int
    skipped: int  # sample rows with nulls the node would refuse
    precision: str
    tolerance: float
    classes_identical: bool | None = None
    max_abs_proba_diff: float | None = None
    max_rel_error: float | None = None
    failure: str | None = None  # the worst row, when the check failed

    @property
    def passed(self) -> bool:
        return self.failure is None

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "source": self.source}
        if self.rows == 0:
            return out
        if self.task == "regression":
            out["max_rel_error"] = self.max_rel_error
        else:
            out["max_abs_proba_diff"] = self.max_abs_proba_diff
            out["classes_identical"] = self.classes_identical
        out["tolerance"] = self.tolerance
        if self.skipped:
            out["skipped_rows"] = self.skipped
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return repr(value)


def _row_text(features: list[Feature], row: list[Any], limit: int = 400) -> str:
    text = ", ".join(f"{f.name}={_fmt(v) if v is not None else 'null'}" for f, v in zip(features, row, strict=True))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _probas(values: Any) -> str:
    return "[" + ", ".join(f"{float(p):.6g}" for p in values) + "]"


def check(
    endpoint: str,
    info: ModelInfo,
    features: list[Feature],
    conv: Converted,
    rows: list[list[Any]],
    labels: list[str],
    source: str,
    skipped: int,
    tolerance: float,
) -> ParityResult:
    """`labels[i]` says where rows[i] comes from ("row 17 of data/sample.csv")."""
    base = ParityResult(endpoint, info.task, source, len(rows), skipped, conv.precision, tolerance)
    if not rows:
        return base
    from threadpoolctl import threadpool_limits

    feed = onnx_feed(features, conv.precision, conv.input_mode, conv.input_name, rows)
    x = sklearn_input(info, features, rows)
    # A few thousand rows: OpenMP/BLAS threads only cost barrier waits on a busy machine.
    with threadpool_limits(limits=1):
        if info.task == "regression":
            result = _regression(base, info, conv, feed, x, features, rows, labels)
        else:
            result = _classifier(base, info, conv, feed, x, features, rows, labels)
        if result.failure is None:
            return result
        from compiler.diagnose import diagnose, initial_types

        initial = initial_types(features, conv.precision, conv.input_mode, conv.input_name)
        return _replace(result, failure=f"{result.failure}; {diagnose(info, initial, feed, x)}")


def _regression(
    base: ParityResult,
    info: ModelInfo,
    conv: Converted,
    feed: dict[str, Any],
    x: Any,
    features: list[Feature],
    rows: list[list[Any]],
    labels: list[str],
) -> ParityResult:
    expected = np.asarray(info.estimator.predict(x), dtype=np.float64).reshape(-1)
    got = np.asarray(conv.session.run([conv.value_output], feed)[0], dtype=np.float64).reshape(-1)
    if got.shape != expected.shape:
        return _replace(base, failure=f"the ONNX output has shape {got.shape}, expected {expected.shape}")
    floor = max(REL_FLOOR * float(np.nanmax(np.abs(expected))) if expected.size else 0.0, 1e-12)
    rel = np.abs(expected - got) / np.maximum(np.abs(expected), floor)
    rel = np.where(np.isnan(rel), np.inf, rel)
    worst = int(np.argmax(rel))
    result = _replace(base, max_rel_error=float(rel[worst]))
    if rel[worst] <= base.tolerance:
        return result
    return _replace(
        result,
        failure=(
            f"{labels[worst]} ({_row_text(features, rows[worst])}): scikit-learn predicts "
            f"{expected[worst]:.9g}, ONNX predicts {got[worst]:.9g} (relative error "
            f"{rel[worst]:.3g} > {base.tolerance:g})"
        ),
    )


def _classifier(
    base: ParityResult,
    info: ModelInfo,
    conv: Converted,
    feed: dict[str, Any],
    x: Any,
    features: list[Feature],
    rows: list[list[Any]],
    labels: list[str],
) -> ParityResult:
    classes = list(info.classes or [])
    index = {c: i for i, c in enumerate(classes)}
    n, k = len(rows), len(classes)
    sk_idx = np.array([index.get(_item(v), -1) for v in info.estimator.predict(x)], dtype=np.int64)
    sk_proba = np.asarray(info.estimator.predict_proba(x), dtype=np.float64)
    out_label, out_proba = conv.session.run([conv.label_output, conv.proba_output], feed)
    proba = np.asarray(out_proba, dtype=np.float64)
    if proba.shape != (n, k):
        return _replace(base, failure=f"the ONNX probabilities have shape {proba.shape}, expected {(n, k)}")
    if conv.label_class:
        onnx_idx = np.array([index.get(_item(v), -1) for v in np.asarray(out_label).reshape(-1)], dtype=np.int64)
    else:  # as the node does, and as scikit-learn's predict: the first maximum (ties included)
        onnx_idx = proba.argmax(axis=1)
    diff = np.abs(sk_proba - proba).max(axis=1)
    diff = np.where(np.isnan(diff), np.inf, diff)
    mismatch = sk_idx != onnx_idx
    if not conv.label_class:  # the class is the first maximum of the probabilities: ties are ties
        mismatch[_ties(mismatch, sk_idx, onnx_idx, sk_proba, proba)] = False
    identical = not bool(mismatch.any())
    candidates = np.flatnonzero(mismatch) if not identical else np.arange(n)
    worst = int(candidates[np.argmax(diff[candidates])])
    result = _replace(base, classes_identical=identical, max_abs_proba_diff=float(diff.max()))
    if identical and diff.max() <= base.tolerance:
        return result

    def name(i: int) -> str:
        return repr(classes[i]) if 0 <= i < k else "an unknown class"

    why = "the classes differ" if not identical else f"|Δproba| {diff[worst]:.3g} > {base.tolerance:g}"
    return _replace(
        result,
        failure=(
            f"{labels[worst]} ({_row_text(features, rows[worst])}): scikit-learn predicts "
            f"{name(int(sk_idx[worst]))} with probabilities {_probas(sk_proba[worst])}, ONNX "
            f"predicts {name(int(onnx_idx[worst]))} with {_probas(proba[worst])} ({why}; "
            f"classes {classes})"
        ),
    )


def _ties(mismatch: Any, sk_idx: Any, onnx_idx: Any, sk_proba: Any, proba: Any) -> Any:
    """Rows whose two classes tie in both models (within TIE): the node answers the first,
    as predict does on an exact tie; scikit-learn may answer the other only because its sum
    of per-tree probabilities rounded one of them down (0.49999999999999994 vs 0.5)."""
    rows = np.flatnonzero(mismatch & (sk_idx >= 0))
    a, b = onnx_idx[rows], sk_idx[rows]
    tied = (np.abs(proba[rows, a] - proba[rows, b]) <= TIE) & (np.abs(sk_proba[rows, a] - sk_proba[rows, b]) <= TIE)
    return rows[tied]


def _item(value: Any) -> Any:
    item = value.item() if hasattr(value, "item") else value
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return item


def _replace(result: ParityResult, **changes: Any) -> ParityResult:
    from dataclasses import replace

    return replace(result, **changes)
