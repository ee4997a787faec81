"""OIP tensors <-> numpy arrays, whatever carried them: JSON data, raw little-endian bytes
(Triton's binary extension on HTTP, `raw_input_contents` on gRPC) or typed proto contents.

A :class:`Tensor` is what the transports hand to :mod:`node.oip.plane` and get back from
it: a name, an OIP datatype, a shape and its flat data: a numpy array, or a list of Python
values (`bytes` for BYTES, whose data is always a list). A list is what a small tensor is
kept as: the single-row call is the common one, and for a few values numpy's array, then
its `tolist()` for the codec and the JSON answer, cost more than the values themselves. The
values of a list are those the array would hold (`float` for FP64, in int64's range for
INT64, ...), so either form means the same to the model. Every way a caller can get a
tensor wrong (an unknown datatype, a size that does not match the shape, a value that is
not of the datatype) is a :class:`~node.errors.BadRequest`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
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
_KNOWN = frozenset(DATATYPES)
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
# struct codes of the datatypes whose lists `to_raw` packs without numpy
_STRUCT = {"BOOL": "?", "INT32": "i", "INT64": "q", "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d"}
# ... and those whose raw bytes `from_raw` reads into a list so: the values numpy's array
# would give, as Python values (a BOOL byte other than 0 is True to both; FP16 is left to numpy)
_UNPACK = _STRUCT | {"INT8": "b", "INT16": "h", "UINT8": "B", "UINT16": "H"}
_SIZE = {k: struct.calcsize("<" + v) for k, v in _UNPACK.items()}
_LEN = struct.Struct("<I")
SMALL = 64  # elements: a tensor of JSON data up to this size is kept as a list
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_INT = 2**53  # integers a double holds exactly

Data = np.ndarray[Any, Any] | list[Any]


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: Data  # flat, row-major (see the module's docstring)


def check_header(name: Any, datatype: Any, shape: Any) -> int:
    """Validates a tensor's name, datatype and shape; returns its number of elements. Sizes
    are checked against the data before anything is allocated; the number of rows is held
    to `--max-items` by the predict-multi path."""
    if not isinstance(name, str) or not name:
        raise BadRequest("every tensor needs a 'name'")
    if type(datatype) is not str or datatype not in _KNOWN:
        raise BadRequest(f"tensor {name!r}: unknown datatype {datatype!r} (known: {', '.join(DATATYPES)})")
    n = 1
    if isinstance(shape, list | tuple):
        for d in shape:
            if type(d) is not int or d < 0:
                break
            n *= d
        else:
            return n
    raise BadRequest(f"tensor {name!r}: 'shape' must be a list of non-negative integers")


def _flatten(data: Any, out: list[Any]) -> None:
    for v in data:
        if type(v) is list:
            _flatten(v, out)
        else:
            out.append(v)


def from_json(name: Any, datatype: Any, shape: Any, data: Any) -> Tensor:
    """A tensor of the JSON form: `data` flat or nested, row-major."""
    if type(name) is str and type(datatype) is str and type(shape) is list and type(data) is list and name:
        # The common tensor, checked here at once: a few values of the datatype's own kind,
        # flat (a nested value is a list, which `_as_list` refuses). Anything else, and
        # every error, takes the general path below.
        n = 1
        for d in shape:
            if type(d) is not int or d < 0:
                break
            n *= d
        else:
            if n == len(data) and n <= SMALL and datatype in _KNOWN:
                values = _as_list(datatype, data)
                if values is not None:
                    return Tensor(name, datatype, shape, values)
    n = check_header(name, datatype, shape)
    if type(data) is not list:
        data = [data]
    flat: list[Any] = []
    _flatten(data, flat)
    if len(flat) != n:
        raise BadRequest(f"tensor {name!r} of shape {list(shape)} needs {n} values, got {len(flat)}")
    if datatype == "BYTES":
        if not all(type(v) is str for v in flat):
            raise BadRequest(f"tensor {name!r}: BYTES data must be strings")
        return Tensor(name, datatype, list(shape), [v.encode() for v in flat])
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


def _as_list(datatype: str, flat: list[Any]) -> list[Any] | None:
    """The values numpy's array of `datatype` would hold (or, for BYTES, the text encoded),
    when the JSON values are of the common kinds (FP64 numbers, INT64 integers within its
    range, BOOL booleans, BYTES strings); None for anything else, which takes the general
    path (numpy's conversions, and every error)."""
    if datatype == "BYTES":
        for v in flat:
            if type(v) is not str:
                return None
        return [v.encode() for v in flat]
    if datatype == "FP64":
        exact = True
        for v in flat:
            if type(v) is not float:
                if type(v) is not int or not -_EXACT_INT <= v <= _EXACT_INT:
                    return None
                exact = False
        return flat if exact else [float(v) for v in flat]
    if datatype == "INT64":
        for v in flat:
            if type(v) is not int or not _INT64_MIN <= v <= _INT64_MAX:
                return None
        return flat
    if datatype == "BOOL":
        for v in flat:
            if type(v) is not bool:
                return None
        return flat
    return None


def from_raw(name: Any, datatype: Any, shape: Any, raw: bytes) -> Tensor:
    """A tensor of the binary form: little-endian elements, or length-prefixed BYTES."""
    n = check_header(name, datatype, shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, list(shape), _split_bytes(name, raw, n))
    code = _UNPACK.get(datatype)
    if code is not None and n <= SMALL and len(raw) == n * _SIZE[datatype]:  # a few values: a list
        return Tensor(name, datatype, list(shape), list(struct.unpack(f"<{n}{code}", raw)))
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
        return Tensor(name, datatype, list(shape), list(values))
    try:
        return Tensor(name, datatype, list(shape), np.array(values, dtype=NUMPY[datatype]))
    except OverflowError as exc:
        raise BadRequest(f"tensor {name!r}: a value does not fit {datatype}: {exc}") from None


def _split_bytes(name: str, raw: bytes, n: int) -> list[bytes]:
    pos, end = 0, len(raw)
    if 4 * n > end:
        raise BadRequest(f"tensor {name!r}: {end} bytes cannot hold {n} BYTES elements")
    out: list[bytes] = [b""] * n
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
    data = t.data
    if t.datatype == "BYTES":
        return b"".join(_LEN.pack(len(v)) + v for v in data)
    if type(data) is list and t.datatype in _STRUCT:
        return struct.pack(f"<{len(data)}{_STRUCT[t.datatype]}", *data)
    return np.ascontiguousarray(data, dtype=NUMPY[t.datatype]).tobytes()


def to_json_data(t: Tensor) -> list[Any]:
    """The JSON `data` of an output tensor (flat; BYTES as text)."""
    data = t.data
    if t.datatype == "BYTES":
        return [v.decode("utf-8", "replace") for v in data]
    if isinstance(data, list):
        return data
    return data.tolist()  # type: ignore[no-any-return]
