"""After a failed parity check: which step of the pipeline diverged, and what to change.

Only runs when the check failed. The pipeline's steps before the estimator are converted
prefix by prefix (the first step, the first two, ...) with the same inputs, and each
prefix's ONNX output is compared with scikit-learn's `transform` on the same rows; the first
prefix that differs names the step. When every step agrees, the estimator itself diverged.
Each outcome comes with what the user can change.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from compiler.schema import Feature, ModelInfo

STEP_TOLERANCE = 1e-6  # relative: the steps compute in double; more is a real divergence


def _advice(step: Any) -> str:
    name = type(step).__name__
    if name in ("TfidfVectorizer", "CountVectorizer"):
        return (
            "its tokens differ from those of ONNX's tokenizer (RE2, whose \\b word boundary is ASCII only): "
            "refit with the default token_pattern (converted exactly) or a token_pattern without \\b"
        )
    if name == "FunctionTransformer":
        return "the function gives other values in ONNX: compute the column before calling the endpoint"
    return "refit without this step, or open an issue with the model"


def _estimator_advice(info: ModelInfo) -> str:
    name = type(info.final).__name__
    if "Tree" in name or "Forest" in name or "Boost" in name or name.startswith(("XGB", "LGBM")):
        return (
            f"every step agreed: {name} itself diverged (an input equal, or within float rounding, to a "
            "split threshold goes the other way); round the inputs to fewer decimals before fitting, or "
            "raise parity_tolerance if the difference is acceptable"
        )
    return (
        f"every step agreed: {name} itself diverged; raise parity_tolerance if the difference is "
        "acceptable, or refit it (scale the inputs, regularise) so that its answers are less sensitive"
    )


def diagnose(info: ModelInfo, initial: list[tuple[str, Any]], feed: dict[str, Any], x: Any) -> str:
    """A sentence: which step diverged (or that the estimator did), and what to change."""
    steps = getattr(info.estimator, "steps", None)
    if not steps or len(steps) < 2:
        return _estimator_advice(info)
    try:
        for k in range(1, len(steps)):
            found = _step_diverges(info, steps, k, initial, feed, x)
            if found is not None:
                return found
    except Exception:  # the diagnosis must never hide the parity failure itself
        return "the steps could not be compared one by one; raise parity_tolerance if the difference is acceptable"
    return _estimator_advice(info)


def _step_diverges(
    info: ModelInfo, steps: list[tuple[str, Any]], k: int, initial: list[tuple[str, Any]], feed: Any, x: Any
) -> str | None:
    from skl2onnx import convert_sklearn
    from sklearn.pipeline import Pipeline

    from compiler._skl2onnx_fixes import custom_converters, custom_shape_calculators, patched
    from compiler.onnx_convert import TARGET_OPSET, _session, vectorizer_options

    prefix = Pipeline(steps[:k])
    with warnings.catch_warnings(), patched():
        warnings.simplefilter("ignore")
        onx = convert_sklearn(
            prefix,
            initial_types=initial,
            target_opset=TARGET_OPSET,
            options=vectorizer_options(prefix) or None,
            custom_conversion_functions=custom_converters(),
            custom_shape_calculators=custom_shape_calculators(),
        )
    session = _session(onx.SerializeToString())
    got = np.asarray(session.run(None, feed)[0], dtype=np.float64)
    expected = prefix.transform(x)
    expected = np.asarray(expected.toarray() if hasattr(expected, "toarray") else expected, dtype=np.float64)
    if got.shape != expected.shape:
        return f"step {steps[k - 1][0]!r} gives {got.shape[1:]} columns in ONNX, {expected.shape[1:]} in scikit-learn"
    scale = np.maximum(np.abs(expected), 1.0)
    diff = np.abs(got - expected) / scale
    diff = np.where(np.isnan(got) != np.isnan(expected), np.inf, np.nan_to_num(diff, nan=0.0))
    if diff.max() <= STEP_TOLERANCE:
        return None
    return _culprit(steps[k - 1], diff)


def _culprit(named: tuple[str, Any], diff: np.ndarray) -> str:
    """The step itself, or, inside a ColumnTransformer, the transformer whose columns differ."""
    name, step = named
    bad = diff.max(axis=0) > STEP_TOLERANCE
    for tname, where in getattr(step, "output_indices_", {}).items():
        if not bad[where].any():
            continue
        trans = step.named_transformers_[tname]
        inner = [s for _, s in getattr(trans, "steps", [(tname, trans)])]
        culprit = next((s for s in inner if type(s).__name__ in _NAMED), inner[-1])
        return (
            f"the ONNX graph diverges from scikit-learn at {name!r} -> {tname!r} "
            f"({type(culprit).__name__}): {_advice(culprit)}"
        )
    return f"the ONNX graph diverges from scikit-learn at step {name!r} ({type(step).__name__}): {_advice(step)}"


_NAMED = ("TfidfVectorizer", "CountVectorizer", "FunctionTransformer")


def initial_types(features: list[Feature], precision: str, mode: str, input_name: str) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    number = DoubleTensorType if precision == "double" else FloatTensorType
    if mode == "columns":
        return [(f.name, StringTensorType([None, 1]) if f.type == "string" else number([None, 1])) for f in features]
    return [(input_name, number([None, len(features)]))]
