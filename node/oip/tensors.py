"""OIP tensors <-> numpy arrays, whatever carried them: JSON data, raw little-endian bytes
(Triton's binary extension on HTTP, `raw_input_contents` on gRPC) or typed proto contents.

A :class:`Tensor` is what the transports hand to :mod:`node.oip.plane` and get back from
it: a name, an OIP datatype, a shape and a flat array (`object` dtype holding `bytes` for
BYTES). Every way a caller can get a tensor wrong (an unknown datatype, a size that does not
match the shape, a value that is not of the datatype) is a :class:`~node.errors.BadRequest`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from node.errors import BadRequest

# OIP datatype -> little-endian numpy dtype (BYTES is handled apart: length-prefixed).
NUMPY: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = (*NUMPY, "BYTES")
# The typed field of InferTensorContents that holds each datatype (FP16 travels raw only).
CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LEN = struct.Struct("<I")


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray[Any, Any]  # flat, row-major
    parameters: dict[str, Any] = field(default_factory=dict)


def check_header(name: Any, datatype: Any, shape: Any) -> int:
    """Validates a tensor's name, datatype and shape; returns its number of elements. Sizes
    are checked against the data before anything is allocated; the number of rows is held
    to `--max-items` by the predict-multi path."""
    if not isinstance(name, str) or not name:
        raise BadRequest("every tensor needs a 'name'")
    if datatype not in DATATYPES:
        raise BadRequest(f"tensor {name!r}: unknown datatype {datatype!r} (known: {', '.join(DATATYPES)})")
    if not isinstance(shape, list | tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    return math.prod(shape)


def _flatten(data: Any, out: list[Any]) -> None:
    for v in data:
        if type(v) is list:
            _flatten(v, out)
        else:
            out.append(v)


def from_json(name: Any, datatype: Any, shape: Any, data: Any) -> Tensor:
    """A tensor of the JSON form: `data` flat or nested, row-major."""
    n = check_header(name, datatype, shape)
    if not isinstance(data, list):
        data = [data]
    flat: list[Any] = []
    _flatten(data, flat)
    if len(flat) != n:
        raise BadRequest(f"tensor {name!r} of shape {list(shape)} needs {n} values, got {len(flat)}")
    if datatype == "BYTES":
        if not all(type(v) is str for v in flat):
            raise BadRequest(f"tensor {name!r}: BYTES data must be strings")
        return Tensor(name, datatype, list(shape), np.array([v.encode() for v in flat] or [], dtype=object))
    if datatype == "BOOL":
        if not all(type(v) is bool for v in flat):
            raise BadRequest(f"tensor {name!r}: BOOL data must be true or false")
    elif not all(type(v) is int or type(v) is float for v in flat):  # no strings, no booleans
        raise BadRequest(f"tensor {name!r}: {datatype} data must be numbers")
    try:
        arr = np.array(flat, dtype=NUMPY[datatype])
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"tensor {name!r}: a value does not fit {datatype}: {exc}") from None
    if datatype.startswith(("INT", "UINT")) and not all(type(v) is int for v in flat):
        raise BadRequest(f"tensor {name!r}: {datatype} data must be integers")
    return Tensor(name, datatype, list(shape), arr)


def from_raw(name: Any, datatype: Any, shape: Any, raw: bytes) -> Tensor:
    """A tensor of the binary form: little-endian elements, or length-prefixed BYTES."""
    n = check_header(name, datatype, shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, list(shape), _split_bytes(name, raw, n))
    dtype = np.dtype(NUMPY[datatype])
    if len(raw) != n * dtype.itemsize:
        raise BadRequest(
            f"tensor {name!r} of shape {list(shape)} and datatype {datatype} needs "
            f"{n * dtype.itemsize} bytes, got {len(raw)}"
        )
    return Tensor(name, datatype, list(shape), np.frombuffer(raw, dtype=dtype))


def from_contents(name: Any, datatype: Any, shape: Any, contents: Any) -> Tensor:
    """A tensor of gRPC's typed form: the InferTensorContents field of its datatype."""
    n = check_header(name, datatype, shape)
    if datatype not in CONTENTS:
        raise BadRequest(f"tensor {name!r}: {datatype} travels in raw_input_contents only")
    values = getattr(contents, CONTENTS[datatype])
    if len(values) != n:
        raise BadRequest(f"tensor {name!r} of shape {list(shape)} needs {n} values, got {len(values)}")
    if datatype == "BYTES":
        return Tensor(name, datatype, list(shape), np.array(list(values) or [], dtype=object))
    try:
        return Tensor(name, datatype, list(shape), np.array(values, dtype=NUMPY[datatype]))
    except OverflowError as exc:
        raise BadRequest(f"tensor {name!r}: a value does not fit {datatype}: {exc}") from None


def _split_bytes(name: str, raw: bytes, n: int) -> np.ndarray[Any, Any]:
    pos, end = 0, len(raw)
    if 4 * n > end:
        raise BadRequest(f"tensor {name!r}: {end} bytes cannot hold {n} BYTES elements")
    out = np.empty(n, dtype=object)
    for i in range(n):
        if pos + 4 > end:
            raise BadRequest(f"tensor {name!r}: the BYTES data ends after {i} of {n} elements")
        (length,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if pos + length > end:
            raise BadRequest(f"tensor {name!r}: BYTES element {i} runs past the data")
        out[i] = raw[pos : pos + length]
        pos += length
    if pos != end:
        raise BadRequest(f"tensor {name!r}: {end - pos} bytes left over after {n} BYTES elements")
    return out


def to_raw(t: Tensor) -> bytes:
    """The binary form of an output tensor."""
    if t.datatype == "BYTES":
        return b"".join(_LEN.pack(len(v)) + v for v in t.data)
    return np.ascontiguousarray(t.data, dtype=NUMPY[t.datatype]).tobytes()


def to_json_data(t: Tensor) -> list[Any]:
    """The JSON `data` of an output tensor (flat; BYTES as text)."""
    if t.datatype == "BYTES":
        return [v.decode("utf-8", "replace") for v in t.data]
    return t.data.tolist()  # type: ignore[no-any-return]
