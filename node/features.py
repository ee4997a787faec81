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

from apz.features import FeatureValueError, coercer
from apz.specs import EndpointSpec
from node.errors import BadRequest
from node.explanations import percentile

_MISSING = object()
MAX_STRING_CHARS = 65_536  # the default of `--max-string-chars`


_NEAR_MISS_CANDIDATES = 200  # unknown names compared (difflib is quadratic in their length)


class FeatureCodec:
    """Built once per prediction endpoint from its manifest entry."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self._plan = [(f.name, coercer(f.type, f.onnx_type), f.nullable, f.onnx_type) for f in spec.features]
        self._strings = [(i, f.name) for i, f in enumerate(spec.features) if f.type == "string"]
        self._names = frozenset(f.name for f in spec.features)
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

    def results(self, arrays: tuple[list[Any], ...]) -> list[dict[str, Any]]:
        """The answers of `PredictionRuntime.run` (lists) in the API's shape; a last list
        of explanations (`PredictionRuntime.explain`) when some rows asked for them."""
        if self.regression:
            out = [{"prediction": v, "ignored": False} for v in arrays[0]]
        else:
            idx, probas = arrays[0], arrays[1]
            classes, keys = self.classes, self.class_keys
            out = [
                {"prediction": classes[i], "probas": dict(zip(keys, p, strict=True)), "ignored": False}
                for i, p in zip(idx, probas, strict=True)
            ]
            ranks, positive = self.spec.proba_percentiles, self.spec.positive
            if ranks is not None:  # binary: where the positive probability ranks in the sample
                for result, p in zip(out, probas, strict=True):
                    result["probaPercentile"] = percentile(ranks, p[positive])
        if len(arrays) > (1 if self.regression else 2):
            for result, x in zip(out, arrays[-1], strict=True):
                if x is not None:
                    result["explanations"] = x["explanations"]
                    result["explanationMethod"] = x["method"]
        return out


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

    def results(self, arrays: tuple[Any, ...]) -> list[dict[str, Any]]:
        return list(arrays[0])
