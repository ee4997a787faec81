"""Framing shared by the front process and its workers.

Each message is a 4-byte little-endian length and a pickle (protocol 5). Pickle is the
right tool across this boundary: both ends are apinode, and numpy arrays travel without
copies through JSON. Two channels per worker, both socketpairs:

- data:    front -> worker `(id, op, payload)`; worker -> front `(id, ok, payload)`,
           one request at a time, answered in order.
- control: front -> worker `("ping", t)`; worker -> front `("pong", t)`, answered by a
           thread of its own, so a worker that stops answering pings while busy is hung
           (C code holding the GIL, a stopped process), not merely slow.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 30

# data-channel ops
OP_INIT = "init"
OP_PREDICT = "predict"
OP_CALL = "call"
OP_QUERY = "query"

# error kinds a worker reports: (kind, message, detail)
ERR_BAD_REQUEST = "bad_request"
ERR_USER = "user_error"
ERR_INTERNAL = "internal"
ERR_SQL = "sql_error"  # the statement failed in the database
ERR_SQL_VALUE = "sql_bad_value"  # the database refused a value of the caller
ERR_UNAVAILABLE = "database_unavailable"  # the database cannot be reached


def encode(msg: Any) -> bytes:
    body = pickle.dumps(msg, protocol=5)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Any:
    return pickle.loads(body)
