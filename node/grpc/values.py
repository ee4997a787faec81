"""JSON values <-> `apinode.v1.Value`, the typed scalar of the gRPC user API: the one
conversion every side uses (the node's codec, `apinode deploy test`, the load tester,
`--print-usage`'s grpcurl bodies).

It depends only on the generated stubs, so the deployer and the load tester, which may
import nothing else of the node (DESIGN.md), import it too.

The rule, both ways:

    null            <-> null
    true / false    <-> flag
    an integer      <-> integer (int64); one beyond int64 -> text of its digits (exact, and
                        read back as the JSON API would read the number: "12345678901234567890")
    a float         <-> number
    a string        <-> text
    an array/object  -> text of its JSON (a database's array or JSON column, a class label
                        that is a list): a Value is a scalar
    anything else    -> text of `str(x)` (a date, a Decimal)
"""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb

_INT64 = 2**63


def value_to_py(v: pb.Value) -> Any:
    """A Value as its JSON scalar (an unset Value is null)."""
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    return getattr(v, kind)


def py_to_value(x: Any) -> pb.Value:
    """A JSON value as a Value (the module's docstring gives the rule)."""
    if x is None:
        return pb.Value(null=struct_pb2.NULL_VALUE)
    if isinstance(x, bool):
        return pb.Value(flag=x)
    if isinstance(x, int):
        return pb.Value(integer=x) if -_INT64 <= x < _INT64 else pb.Value(text=str(x))
    if isinstance(x, float):
        return pb.Value(number=x)
    if isinstance(x, str):
        return pb.Value(text=x)
    if isinstance(x, list | dict):
        return pb.Value(text=orjson.dumps(x).decode())
    return pb.Value(text=str(x))


# A database cell (node.worker.sql.json_safe) follows the same rule.
cell_to_value = py_to_value


def is_scalar(x: Any) -> bool:
    """A value a feature, key or parameter may take: a Value holds it as it is."""
    return x is None or isinstance(x, bool | int | float | str)


def value_json(x: Any) -> dict[str, Any]:
    """A JSON value as a Value in proto3 JSON (what grpcurl takes), the integer as a number."""
    v = py_to_value(x)
    kind = v.WhichOneof("kind")
    assert kind is not None
    return {kind: "NULL_VALUE" if kind == "null" else getattr(v, kind)}
