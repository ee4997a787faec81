"""Feature values -> the node's rows -> ONNX feeds, and the same rows for scikit-learn.

The parity check is only worth something if the ONNX model is fed exactly as the node will
feed it. How a JSON value is coerced to a feature's type is the package format's
(:mod:`apz.features`, which node/features.py uses too); which nulls are allowed mirrors
node/features.py (`FeatureCodec.row`), and the feeds node/worker/runtime.py
(`PredictionRuntime._inputs`: `[N, 1]` per feature or one matrix, null numbers as NaN,
null strings as ""). The compiler may not import the node (DESIGN.md): keep those in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from apz.features import FeatureValueError, coercer
from compiler.schema import Feature, ModelInfo

NP_TYPES: dict[str, Any] = {
    "float": np.float32,
    "double": np.float64,
    "int64": np.int64,
    "string": object,
    "bool": np.bool_,
}
# A value the node would refuse with a 400 (the message names the feature)
BadValue = FeatureValueError


def is_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def coerce(feature: Feature, value: Any) -> Any:
    """One non-null value as the node coerces it for `feature` (the rows are built before
    the model's input precision is chosen: the range of a float64 input)."""
    plain = value.item() if isinstance(value, np.generic) else value
    return coercer(feature.type, "double")(feature.name, plain)


class NullValue(BadValue):
    """A null (or missing) value for a feature that is not nullable."""


def to_row(features: list[Feature], values: Mapping[str, Any]) -> list[Any]:
    """Coerced values in feature order; None for a null (allowed only when nullable)."""
    row: list[Any] = []
    for f in features:
        value = values.get(f.name)
        if is_null(value):
            if not f.nullable:
                what = "is missing" if f.name not in values else "is null"
                raise NullValue(f"feature {f.name!r} {what} and the model cannot impute it")
            row.append(None)
        else:
            row.append(coerce(f, value))
    return row


def onnx_feed(
    features: list[Feature], precision: str, mode: str, input_name: str, rows: list[list[Any]]
) -> dict[str, np.ndarray]:
    types = [NP_TYPES["string" if f.type == "string" else precision] for f in features]
    node_rows = [
        [("" if v is None else v) if f.type == "string" else v for f, v in zip(features, r, strict=True)] for r in rows
    ]
    if mode == "matrix":
        return {input_name: np.array(node_rows, dtype=types[0])}
    n = len(rows)
    return {
        f.name: np.array([r[j] for r in node_rows], dtype=dt).reshape(n, 1)
        for j, (f, dt) in enumerate(zip(features, types, strict=True))
    }


def sklearn_input(info: ModelInfo, features: list[Feature], rows: list[list[Any]]) -> Any:
    """The same rows as the original model takes them: a DataFrame, or a float matrix."""
    import pandas as pd

    if info.input_mode == "matrix":
        matrix = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
        if info.model_columns is None:
            return matrix
        return pd.DataFrame(matrix, columns=info.model_columns)
    columns: dict[str, Any] = {}
    for j, f in enumerate(features):
        values = [r[j] for r in rows]
        has_null = any(v is None for v in values)
        if f.type == "string":
            columns[f.name] = pd.Series([np.nan if v is None else v for v in values], dtype=object)
        elif f.type == "float" or has_null:
            columns[f.name] = pd.Series([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            columns[f.name] = pd.Series(values, dtype=np.int64 if f.type == "int" else bool)
    n = len(rows)
    for name in info.model_columns or []:
        if name not in columns:  # fitted on, but dropped by the ColumnTransformer
            columns[name] = pd.Series([np.nan] * n, dtype=np.float64)
    return pd.DataFrame(columns)[info.model_columns or [f.name for f in features]]
