"""What a feature value means: a caller's JSON value coerced to its feature's type.

Part of the package format's contract: the node (:mod:`node.features`) coerces request
features with these before rows reach a model, and the compiler (:mod:`compiler.rows`)
feeds its parity check the rows the node would build, with the same functions, so a
value the compiler checked is one the node answers the same way.

A number feature takes numbers and numeric strings ("12.5"), never booleans, NaN or
infinities; an int feature an integral value within int64; a string feature text or an
integer (ids sent as numbers); a bool feature true/false, 0/1 or their usual spellings.
Refusals are :class:`FeatureValueError`, whose message names the feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max

Coercion = Callable[[str, Any], Any]


class FeatureValueError(ValueError):
    """A value its feature's type cannot take; the message names the feature."""


def show(value: Any) -> str:
    """A caller's value for an error message: short, and never a whole container."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + "..."
    return repr(value)


def _num(name: str, value: Any, want: str) -> float:
    if isinstance(value, bool):
        raise FeatureValueError(f"feature {name!r} must be a number ({want}), got a boolean")
    if isinstance(value, int | float):
        try:
            v = float(value)
        except OverflowError:  # an int beyond any double
            raise FeatureValueError(f"feature {name!r} must be a finite number ({want}), got {show(value)}") from None
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            raise FeatureValueError(
                f"feature {name!r} must be a number ({want}), got the string {show(value)}"
            ) from None
    else:
        raise FeatureValueError(f"feature {name!r} must be a number ({want}), got {show(value)}")
    if not math.isfinite(v):
        raise FeatureValueError(f"feature {name!r} must be a finite number ({want}), got {show(value)}")
    return v


def coerce_float(name: str, value: Any) -> float:
    if type(value) is float and value - value == 0.0:
        return value  # hot path; NaN and infinities (which gRPC can carry) fail the test
    return _num(name, value, "float")


def coerce_float32(name: str, value: Any) -> float:
    """A float feature of a float32 model: a double beyond float32 would be infinite to it."""
    v = coerce_float(name, value)
    if -_FLOAT32_MAX <= v <= _FLOAT32_MAX:
        return v
    raise FeatureValueError(f"feature {name!r} is out of the model's float32 range (|x| <= 3.4e38), got {show(value)}")


def coerce_int(name: str, value: Any) -> int:
    """An int feature is an int64, whatever the model's input type: beyond it, numpy cannot
    build an int64 batch, nor always a double one ("1" and 400 zeros)."""
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value  # hot path
        raise FeatureValueError(f"feature {name!r} is out of the int64 range, got {show(value)}")
    if type(value) is str:
        try:
            v: float | int = int(value)  # exactly: through a float, "9223372036854775807" rounds past int64
        except ValueError:
            v = _num(name, value, "int")  # "12.0", "1e3", or not a number
    else:
        v = _num(name, value, "int")
    if isinstance(v, float) and not v.is_integer():
        raise FeatureValueError(f"feature {name!r} must be an integer (int), got {show(value)}")
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise FeatureValueError(f"feature {name!r} is out of the int64 range, got {show(value)}")
    return int(v)


def coerce_string(name: str, value: Any) -> str:
    if type(value) is str:
        return value  # valid Unicode: orjson, protobuf and yarl refuse or replace lone surrogates
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # ids and codes sent as numbers
    raise FeatureValueError(f"feature {name!r} must be a string, got {show(value)}")


def coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return _TRUE[value.strip().lower()]
    raise FeatureValueError(f"feature {name!r} must be a boolean (bool), got {show(value)}")


_COERCE: dict[str, Coercion] = {
    "float": coerce_float,
    "int": coerce_int,
    "string": coerce_string,
    "bool": coerce_bool,
}


def coercer(feature_type: str, onnx_type: str) -> Coercion:
    """The coercion of a feature (`FEATURE_TYPES`), stricter where the model's input type
    (`ONNX_TYPES`; "none" without a model) needs it."""
    if feature_type == "float" and onnx_type == "float":
        return coerce_float32
    return _COERCE[feature_type]
