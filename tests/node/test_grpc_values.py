"""The one conversion between JSON values and `apinode.v1.Value` (node/grpc/values.py),
which the node's codec, `apinode deploy test`, the load tester and --print-usage share."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.protobuf import json_format

from node._proto.apinode.v1 import apinode_pb2 as pb
from node.grpc.values import cell_to_value, is_scalar, py_to_value, value_json, value_to_py


@pytest.mark.parametrize(
    ("x", "kind"),
    [(None, "null"), (True, "flag"), (0, "integer"), (-(2**63), "integer"), (2.5, "number"), ("é", "text")],
)
def test_scalars_round_trip_typed(x: Any, kind: str) -> None:
    v = py_to_value(x)
    assert v.WhichOneof("kind") == kind
    back = value_to_py(pb.Value.FromString(v.SerializeToString()))
    assert back == x and type(back) is type(x)


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (2**63, "9223372036854775808"),  # beyond int64: exact digits, never a rounded double
        (-(2**70), str(-(2**70))),
        ([1, "a"], '[1,"a"]'),  # a Value is a scalar: an array or object travels as its JSON
        ({"k": None}, '{"k":null}'),
        (dt.date(2026, 12, 2), "2026-12-02"),
    ],
)
def test_what_is_no_typed_scalar_is_text(x: Any, text: str) -> None:
    assert py_to_value(x).text == text
    assert cell_to_value(x).text == text


def test_an_unset_value_is_null() -> None:
    assert value_to_py(pb.Value()) is None
    assert value_to_py(pb.PredictRequest().features.get("missing", pb.Value())) is None


def test_scalars_are_what_a_feature_may_be() -> None:
    assert all(is_scalar(x) for x in (None, True, 1, 1.5, "x"))
    assert not any(is_scalar(x) for x in ([], {}, b"x"))


@pytest.mark.parametrize("x", [None, True, 14, 3.2, "grocery", 2**64])
def test_the_proto3_json_form_parses_into_the_same_value(x: Any) -> None:
    v = json_format.ParseDict(value_json(x), pb.Value())
    assert v == py_to_value(x)
    assert value_json(14) == {"integer": 14}  # a number, as the README's grpcurl bodies show it
