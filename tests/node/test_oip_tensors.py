"""The lean path of node.oip.tensors: a small tensor is kept as a list of Python values, and
those must be the values (and the errors) of the numpy path it stands in for."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from node.errors import BadRequest
from node.oip import tensors
from node.oip.tensors import NUMPY, SMALL


def _numpy_values(datatype: str, flat: list[Any]) -> list[Any]:
    return np.array(flat, dtype=NUMPY[datatype]).tolist()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("FP64", [1.5, -0.0, 3e300]),
        ("FP64", [1, 2.5, -(2**53)]),  # integers a double holds exactly become floats, as numpy makes them
        ("INT64", [0, -(2**63), 2**63 - 1]),
        ("BOOL", [True, False]),
    ],
)
def test_a_small_json_tensor_is_a_list_of_the_values_numpy_would_hold(datatype: str, data: list[Any]) -> None:
    t = tensors.from_json("x", datatype, [len(data)], data)
    assert isinstance(t.data, list)
    assert t.data == _numpy_values(datatype, data)
    assert [type(v) for v in t.data] == [type(v) for v in _numpy_values(datatype, data)]


def test_nested_and_large_json_tensors_take_the_array_path() -> None:
    nested = tensors.from_json("x", "FP64", [2, 2], [[1.0, 2.0], [3.0, 4.0]])
    assert nested.data.tolist() == [1.0, 2.0, 3.0, 4.0]  # type: ignore[union-attr]
    big = tensors.from_json("x", "FP64", [SMALL + 1], [0.5] * (SMALL + 1))
    assert isinstance(big.data, np.ndarray) and big.data.dtype == np.float64


def test_bytes_are_a_list_of_bytes() -> None:
    t = tensors.from_json("x", "BYTES", [1, 2], ["a", "é"])
    assert t.data == [b"a", "é".encode()]
    assert tensors.to_json_data(t) == ["a", "é"]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT64", [2**63], "does not fit INT64"),
        ("INT64", [1.5], "INT64 data must be integers"),
        ("FP64", [True], "FP64 data must be numbers"),
        ("FP64", ["1.0"], "FP64 data must be numbers"),
        ("FP64", [10**400], "does not fit FP64"),
        ("BOOL", [1], "BOOL data must be true or false"),
        ("BYTES", [1], "BYTES data must be strings"),
        ("UINT8", [300], "does not fit UINT8"),
    ],
)
def test_a_value_off_the_common_kinds_gets_the_general_paths_error(datatype: str, data: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        tensors.from_json("x", datatype, [1], data)


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([2], [1.0], "needs 2 values, got 1"),
        ([1, -1], [1.0], "'shape' must be a list of non-negative integers"),
        ([1, True], [1.0], "'shape' must be a list of non-negative integers"),
        ("1", [1.0], "'shape' must be a list of non-negative integers"),
    ],
)
def test_shapes_are_checked_as_before(shape: Any, data: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        tensors.from_json("x", "FP64", shape, data)


def test_an_unhashable_datatype_is_refused_not_crashed() -> None:
    with pytest.raises(BadRequest, match="unknown datatype"):
        tensors.from_json("x", ["FP64"], [1], [1.0])


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT8"])
def test_a_small_raw_tensor_unpacks_to_the_values_numpy_reads(datatype: str) -> None:
    values = np.array([0, 1, 100, 7], dtype=NUMPY[datatype])
    if datatype.startswith("FP"):
        values = values / 3  # not exactly representable: float32 rounding shows
    raw = values.astype(NUMPY[datatype]).tobytes()
    t = tensors.from_raw("x", datatype, [4], raw)
    expected = np.frombuffer(raw, dtype=NUMPY[datatype]).tolist()
    assert isinstance(t.data, list)
    assert t.data == expected and [type(v) for v in t.data] == [type(v) for v in expected]


def test_raw_booleans_read_as_numpy_reads_them() -> None:
    raw = bytes([0, 1, 2, 255])
    t = tensors.from_raw("x", "BOOL", [4], raw)
    assert t.data == np.frombuffer(raw, dtype="?").tolist() == [False, True, True, True]


def test_a_raw_tensor_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(BadRequest, match="needs 16 bytes, got 8"):
        tensors.from_raw("x", "FP64", [2], struct.pack("<d", 1.0))


def test_list_outputs_encode_as_arrays_do() -> None:
    for datatype, values in (("FP64", [0.25, -1.0]), ("INT64", [3, -4]), ("BOOL", [True, False])):
        listed = tensors.Tensor("y", datatype, [2], values)
        array = tensors.Tensor("y", datatype, [2], np.array(values, dtype=NUMPY[datatype]))
        assert tensors.to_raw(listed) == tensors.to_raw(array)
        assert tensors.to_json_data(listed) == tensors.to_json_data(array)
