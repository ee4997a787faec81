"""Request features -> model rows, and model outputs -> Dataiku-shaped results.

Validation happens in the front process, before a request takes a place in a queue: a
missing feature, a wrong type or an unimputable null is a 400 that names the feature. Extra
features are ignored. Numeric strings ("12.5") are accepted for numeric features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from node.errors import BadRequest
from node.package import EndpointSpec

_MISSING = object()
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _num(name: str, value: Any, want: str) -> float:
    if isinstance(value, bool):
        raise BadRequest(f"feature {name!r} must be a number ({want}), got a boolean")
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            raise BadRequest(f"feature {name!r} must be a number ({want}), got the string {value[:64]!r}") from None
    else:
        raise BadRequest(f"feature {name!r} must be a number ({want}), got {type(value).__name__}")
    if not math.isfinite(v):
        raise BadRequest(f"feature {name!r} must be a finite number ({want}), got {value!r}")
    return v


def _coerce_float(name: str, value: Any) -> float:
    if type(value) is float:
        return value  # hot path
    return _num(name, value, "float")


def _coerce_int(name: str, value: Any) -> int:
    if type(value) is int:
        return value
    v = _num(name, value, "int")
    if not v.is_integer():
        raise BadRequest(f"feature {name!r} must be an integer (int), got {value!r}")
    return int(v)


def _coerce_string(name: str, value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # ids and codes sent as numbers
    raise BadRequest(f"feature {name!r} must be a string, got {type(value).__name__}")


def _coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return _TRUE[value.strip().lower()]
    raise BadRequest(f"feature {name!r} must be a boolean (bool), got {value!r}")


_COERCE = {
    "float": _coerce_float,
    "int": _coerce_int,
    "string": _coerce_string,
    "bool": _coerce_bool,
}


class FeatureCodec:
    """Built once per prediction endpoint from its manifest entry."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self._plan = [(f.name, _COERCE[f.type], f.nullable, f.onnx_type) for f in spec.features]
        self.regression = spec.task == "regression"
        self.classes = list(spec.classes or ())
        self.class_keys = [_label_key(c) for c in self.classes]

    def row(self, features: Any, where: str = "") -> list[Any]:
        if not isinstance(features, dict):
            raise BadRequest(f"{where}'features' must be a JSON object of feature name -> value")
        row: list[Any] = []
        append = row.append
        for name, coerce, nullable, onnx_type in self._plan:
            value = features.get(name, _MISSING)
            if value is None or value is _MISSING:
                if not nullable:
                    what = "is missing" if value is _MISSING else "is null"
                    raise BadRequest(f"{where}feature {name!r} {what} and the model cannot impute it")
                append(None if onnx_type != "string" else "")
                continue
            try:
                append(coerce(name, value))
            except BadRequest as exc:
                if where:
                    raise BadRequest(f"{where}{exc.message}") from None
                raise
        return row

    def results(self, arrays: tuple[Any, ...]) -> list[dict[str, Any]]:
        if self.regression:
            return [{"prediction": v, "ignored": False} for v in np.asarray(arrays[0]).tolist()]
        idx, probas = arrays
        classes, keys = self.classes, self.class_keys
        return [
            {"prediction": classes[i], "probas": dict(zip(keys, p, strict=True)), "ignored": False}
            for i, p in zip(np.asarray(idx).tolist(), np.asarray(probas).tolist(), strict=True)
        ]


def _label_key(label: Any) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)
