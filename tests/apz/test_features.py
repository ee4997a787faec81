"""One feature coercion: the node's request codec and the compiler's parity rows give a
value the same meaning, and refuse the same values with the same message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apz.features import FeatureValueError, coercer
from apz.specs import EndpointSpec, FeatureSpec
from compiler.rows import BadValue, to_row
from compiler.schema import Feature
from node.errors import BadRequest
from node.features import CustomCodec, FeatureCodec

TYPES = ("float", "int", "string", "bool")
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["1", "0", "yes", "No", " 12.5 ", "1e3", "9223372036854775808", "nan", "inf", "12.0"]),
)


def _node(ftype: str, value: Any) -> tuple[str, Any]:
    onnx_type = "string" if ftype == "string" else "bool" if ftype == "bool" else "double"
    spec = EndpointSpec(id="e", type="prediction", features=(FeatureSpec("f", ftype, onnx_type, True),))
    try:
        return "ok", FeatureCodec(spec).row({"f": value})[0]
    except BadRequest as exc:
        return "refused", exc.message


def _compiler(ftype: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", to_row([Feature("f", ftype, True)], {"f": value})[0]
    except BadValue as exc:
        return "refused", str(exc)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(ftype=st.sampled_from(TYPES), value=JSON_SCALARS)
def test_the_node_and_the_compiler_agree(ftype: str, value: Any) -> None:
    if isinstance(value, float) and value != value:
        return  # NaN is a null to the compiler (a pandas missing value), never sent by a JSON caller
    node, compiler = _node(ftype, value), _compiler(ftype, value)
    if value is None:  # the node feeds an ONNX string input "" for it (compiler.rows.onnx_feed too)
        assert node == ("ok", "" if ftype == "string" else None) and compiler == ("ok", None)
    else:
        assert node == compiler


@pytest.mark.parametrize(
    ("ftype", "value", "expected"),
    [
        ("float", "12.5", 12.5),
        ("int", "12.0", 12),
        ("int", "9223372036854775807", 2**63 - 1),
        ("string", 42, "42"),
        ("bool", "Yes", True),
        ("bool", 0, False),
    ],
)
def test_what_a_value_means(ftype: str, value: Any, expected: Any) -> None:
    out = coercer(ftype, "double")("f", value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("ftype", "onnx_type", "value", "message"),
    [
        ("float", "double", True, "feature 'f' must be a number (float), got a boolean"),
        ("float", "double", float("inf"), "feature 'f' must be a finite number (float), got inf"),
        ("float", "float", 1e39, "feature 'f' is out of the model's float32 range"),
        ("int", "int64", 2**63, "feature 'f' is out of the int64 range"),
        ("int", "int64", 1.5, "feature 'f' must be an integer (int), got 1.5"),
        ("string", "string", 1.5, "feature 'f' must be a string, got 1.5"),
        ("bool", "bool", "maybe", "feature 'f' must be a boolean (bool), got 'maybe'"),
        ("float", "double", "x" * 100, "got the string '" + "x" * 60 + "'..."),
    ],
)
def test_refusals_name_the_feature(ftype: str, onnx_type: str, value: Any, message: str) -> None:
    with pytest.raises(FeatureValueError) as info:
        coercer(ftype, onnx_type)("f", value)
    assert message in str(info.value)


def test_a_custom_prediction_takes_a_null_string_feature() -> None:
    """Its features have no ONNX input: a null stays None for the user's DataFrame (it
    used to fail the length check of strings with a TypeError, a 500)."""
    spec = EndpointSpec(id="e", type="custom-prediction", features=(FeatureSpec("f", "string", "none", True),))
    assert CustomCodec(spec).row({"f": None}) == [None]
    assert CustomCodec(spec).row({"f": "x"}) == ["x"]
