"""Request features -> model rows, and model outputs -> Dataiku-shaped results.

Validation happens in the front process, before a request takes a place in a queue: a
missing feature, a wrong type or an unimputable null is a 400 that names the feature. Extra
features are ignored. What a value means for its feature's type (numeric strings such as
"12.5" for numbers, ...) is the package format's (:mod:`apz.features`), which the
compiler's parity check feeds its rows with too.

Everything a model could choke on is refused here, because rows of several requests travel
to a worker as one batch: one value that breaks the batch (an int beyond an int64 input, a
float beyond a float32 one, NaN) would fail or skew its neighbours too.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from apz.features import FeatureValueError, coercer
from apz.specs import EndpointSpec
from node.errors import BadRequest
from node.explanations import percentile
from node.ops import Prediction

_MISSING = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_STRING_CHARS = 65_536  # the default of `--max-string-chars`


_NEAR_MISS_CANDIDATES = 200  # unknown names compared (difflib is quadratic in their length)


class FeatureCodec:
    """Built once per prediction endpoint from its manifest entry."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self._plan = [(f.name, coercer(f.type, f.onnx_type), f.nullable, f.onnx_type) for f in spec.features]
        self._strings = [(i, f.name) for i, f in enumerate(spec.features) if f.type == "string"]
        self._names = frozenset(f.name for f in spec.features)
        self._column_plan = [
            (f.name, f.type, coercer(f.type, f.onnx_type), f.onnx_type == "float", f.nullable) for f in spec.features
        ]
        self.regression = spec.task == "regression"
        self.classes = list(spec.classes or ())
        self.class_keys = [_label_key(c) for c in self.classes]

    def _near_miss(self, name: str, features: dict[Any, Any]) -> str:
        """`; the request has an unknown feature 'Medinc' (a misspelling of 'MedInc'?)`
        when a feature the model does not know is close to the missing `name` (only on
        the error path: extra features are otherwise ignored)."""
        longest = 2 * len(name) + 8  # a much longer name is no misspelling, and costly to compare
        unknown = [k for k in features if isinstance(k, str) and len(k) <= longest and k not in self._names]
        if not unknown:
            return ""
        folded = {k.casefold(): k for k in unknown}
        close = folded.get(name.casefold()) or next(
            iter(difflib.get_close_matches(name, unknown[:_NEAR_MISS_CANDIDATES], n=1, cutoff=0.75)), None
        )
        return f"; the request has an unknown feature {close!r} (a misspelling of {name!r}?)" if close else ""

    def row(self, features: Any, where: str = "", *, max_string: int = MAX_STRING_CHARS) -> list[Any]:
        if not isinstance(features, dict):
            raise BadRequest(f"{where}'features' must be a JSON object of feature name -> value")
        row: list[Any] = []
        append = row.append
        for name, coerce, nullable, onnx_type in self._plan:
            value = features.get(name, _MISSING)
            if value is None or value is _MISSING:
                if not nullable:
                    what = "is missing" if value is _MISSING else "is null"
                    hint = self._near_miss(name, features) if value is _MISSING else ""
                    raise BadRequest(f"{where}feature {name!r} {what} and the model cannot impute it{hint}")
                append(None if onnx_type != "string" else "")
                continue
            try:
                append(coerce(name, value))
            except FeatureValueError as exc:
                raise BadRequest(f"{where}{exc}") from None
        for i, name in self._strings:
            if row[i] is not None and len(row[i]) > max_string:  # None: a custom-prediction's null
                raise BadRequest(
                    f"{where}feature {name!r} is {len(row[i])} characters long; "
                    f"the limit is {max_string} (--max-string-chars)"
                )
        return row

    def rows_of_columns(self, columns: dict[str, Any], n: int, *, max_string: int = MAX_STRING_CHARS) -> list[Any]:
        """The rows of `n` values given column by column (numpy arrays or lists),
        checked as `row` checks them, without a feature mapping per row: a column of the
        feature's type is checked whole. Anything else (a column of another type, a value
        a check refuses) takes `row`'s path, so its errors are `row`'s, row by row. One row
        (the common call) takes `row`'s path at once: one mapping costs less than a list
        per column."""
        if n == 1:
            one = {k: (c.tolist() if isinstance(c, np.ndarray) else c)[0] for k, c in columns.items()}
            return [self.row(one, "items[0]: ", max_string=max_string)]
        cols: list[list[Any]] = []
        for name, ftype, coerce, float32, nullable in self._column_plan:
            col = columns.get(name)
            if col is None:
                if not nullable:
                    return self._rows_one_by_one(columns, n, max_string)
                cols.append([None if ftype != "string" else ""] * n)
                continue
            values = _whole_column(col, name, ftype, coerce, float32, max_string)
            if values is None:
                return self._rows_one_by_one(columns, n, max_string)
            cols.append(values)
        if not cols:
            return [[] for _ in range(n)]
        return [list(r) for r in zip(*cols, strict=True)]

    def _rows_one_by_one(self, columns: dict[str, Any], n: int, max_string: int) -> list[Any]:
        lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in columns.items()}
        return [self.row({k: c[i] for k, c in lists.items()}, f"items[{i}]: ", max_string=max_string) for i in range(n)]

    def results(self, arrays: tuple[list[Any], ...]) -> list[Prediction]:
        """The answers of `PredictionRuntime.run` (lists), one Prediction per row; a last
        list of explanations (`PredictionRuntime.explain`) when some rows asked for them."""
        if self.regression:
            out = [Prediction(v) for v in arrays[0]]
        else:
            idx, probas = arrays[0], arrays[1]
            classes, keys = self.classes, self.class_keys
            out = [Prediction(classes[i], dict(zip(keys, p, strict=True))) for i, p in zip(idx, probas, strict=True)]
            ranks, positive = self.spec.proba_percentiles, self.spec.positive
            if ranks is not None:  # binary: where the positive probability ranks in the sample
                for result, p in zip(out, probas, strict=True):
                    result.proba_percentile = percentile(ranks, p[positive])
        if len(arrays) > (1 if self.regression else 2):
            for result, x in zip(out, arrays[-1], strict=True):
                if x is not None:
                    result.explanations = x["explanations"]
                    result.explanation_method = x["method"]
        return out


VECTOR_MIN = 16  # rows from which a column is checked by numpy rather than value by value


def _whole_column(col: Any, name: str, ftype: str, coerce: Any, float32: bool, max_string: int) -> list[Any] | None:
    """The column's values when all of them pass the feature's check (the values `row`
    would give), else None. Long numeric columns are checked by numpy, whole."""
    if isinstance(col, np.ndarray):
        if len(col) >= VECTOR_MIN and ftype != "string":
            return _numpy_column(col, ftype, float32)
        col = col.tolist()
    try:
        values = [coerce(name, v) for v in col]
    except (BadRequest, FeatureValueError):  # the row path gives the message
        return None
    if ftype == "string" and any(len(v) > max_string for v in values):
        return None
    return values


def _numpy_column(col: np.ndarray[Any, Any], ftype: str, float32: bool) -> list[Any] | None:
    kind = col.dtype.kind
    if ftype == "float":
        if kind in "iu":
            col = col.astype(np.float64)
        elif kind != "f":
            return None
        if not np.isfinite(col).all() or (float32 and np.abs(col).max() > _FLOAT32_MAX):
            return None
        return col.tolist()  # type: ignore[no-any-return]
    if ftype == "int":
        if kind == "i" or (kind == "u" and col.max() <= _INT64_MAX):
            return col.tolist()  # type: ignore[no-any-return]
        if kind == "f" and np.isfinite(col).all() and (col == np.trunc(col)).all():
            if col.min() >= _INT64_MIN and col.max() < 2.0**63:
                return col.astype(np.int64).tolist()  # type: ignore[no-any-return]
        return None
    if ftype == "bool" and kind == "b":
        return col.tolist()  # type: ignore[no-any-return]
    return None


def _label_key(label: Any) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


class CustomCodec(FeatureCodec):
    """A custom-prediction endpoint: declared features are checked like a model's; without
    a declaration the caller's feature object goes to `predict(df)` as it is. The worker
    formats results itself (the user's class says what it predicts)."""

    def row(self, features: Any, where: str = "", *, max_string: int = MAX_STRING_CHARS) -> Any:
        if self._plan:
            return super().row(features, where, max_string=max_string)
        if not isinstance(features, dict):
            raise BadRequest(f"{where}'features' must be a JSON object of feature name -> value")
        return features

    def results(self, arrays: tuple[Any, ...]) -> list[Prediction]:
        return [Prediction(r["prediction"], r.get("probas")) for r in arrays[0]]
