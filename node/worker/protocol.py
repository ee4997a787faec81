"""The messages between the front process and its workers, and their framing.

Each frame is a 4-byte little-endian length and a pickle (protocol 5) of at most
`MAX_FRAME` bytes, on either side: a message that would not fit is never written
(:class:`FrameTooLarge`), and a frame announced larger is never read (the peer is broken).
Pickle is the right tool across this boundary: both ends are apinode, and numpy arrays
travel without copies through JSON. Two channels per worker, both socketpairs:

- data:    front -> worker :class:`Request`; worker -> front :class:`Result` or
           :class:`Error` with the request's id, one request at a time, answered in order.
           The first request is `OP_INIT`, whose payload is the endpoint's spec.
- control: front -> worker :class:`Ping`; worker -> front :class:`Pong`, answered by a
           thread of its own, so a worker that stops answering pings while busy is hung
           (C code holding the GIL, a stopped process), not merely slow.

The messages are NamedTuples, and travel as plain tuples led by a tag of their kind.
Measured on this code's messages (a request of one row, a classifier's result): pickling
a plain tuple costs about 1 µs each way, a NamedTuple or a slotted dataclass pickled by
its class 4-5 µs (pickle calls back into Python to rebuild it). Tagged tuples cost the
front under 1 µs per request more than untyped tuples (building the NamedTuple, and
`tuple.__new__` on the way back), against some 7 µs for pickled NamedTuples; NamedTuples
rather than dataclasses because they convert to and from tuples in C.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Final, NamedTuple

HEADER = struct.Struct("<I")
MAX_FRAME: Final = 1 << 30  # bytes of one pickled message

# data-channel ops
OP_INIT: Final = "init"
OP_PREDICT: Final = "predict"
OP_CALL: Final = "call"
OP_QUERY: Final = "query"

# error kinds a worker reports (Error.kind)
ERR_BAD_REQUEST: Final = "bad_request"
ERR_USER: Final = "user_error"
ERR_INTERNAL: Final = "internal"
ERR_SQL: Final = "sql_error"  # the statement failed in the database
ERR_SQL_VALUE: Final = "sql_bad_value"  # the database refused a value of the caller
ERR_UNAVAILABLE: Final = "database_unavailable"  # the database cannot be reached
ERR_TOO_LARGE: Final = "result_too_large"  # the result would not fit in one frame


class Request(NamedTuple):
    id: int
    op: str
    payload: Any


class Result(NamedTuple):
    id: int
    payload: Any
    compute_us: int  # time the worker spent on the request


class Error(NamedTuple):
    id: int
    kind: str  # one of the ERR_ kinds
    message: str  # safe to show to the caller
    detail: str | None = None  # a traceback, for the node's log and `detailedMessage`


class Ping(NamedTuple):
    sent_at: float


class Pong(NamedTuple):
    sent_at: float


Message = Request | Result | Error | Ping | Pong
_KINDS: tuple[type[Message], ...] = (Request, Result, Error, Ping, Pong)
_TAG: dict[type[Message], tuple[int]] = {cls: (i,) for i, cls in enumerate(_KINDS)}
_dumps, _loads, _pack, _new = pickle.dumps, pickle.loads, HEADER.pack, tuple.__new__


class WorkerError(Exception):
    """What a worker answers for one request that failed for a reason the caller should
    see: raised by a runtime, sent as an :class:`Error`, raised again in the front as
    the matching :class:`~node.errors.ApiNodeError`."""

    def __init__(self, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.detail = kind, message, detail

    def to_message(self, mid: int) -> Error:
        return Error(mid, self.kind, self.message, self.detail)


class FrameTooLarge(Exception):
    """A message that does not fit in one frame (`size` bytes over `limit`)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the frame limit of {limit} bytes between the front and its workers")
        self.size, self.limit = size, limit


def encode(msg: Message, limit: int = MAX_FRAME) -> bytes:
    """The frame of `msg`; raises FrameTooLarge, having written nothing, if it exceeds `limit`."""
    body = _dumps(_TAG[type(msg)] + msg, 5)  # the tag and the fields: a plain tuple
    size = len(body)
    if size > limit:
        raise FrameTooLarge(size, limit)
    return _pack(size) + body


def frame_size(header: bytes | bytearray, limit: int = MAX_FRAME) -> int:
    """The body size a frame header announces; raises FrameTooLarge past `limit`."""
    (size,) = HEADER.unpack_from(header)
    if size > limit:
        raise FrameTooLarge(size, limit)
    return int(size)


def decode(body: bytes) -> Message:
    t = _loads(body)
    return _new(_KINDS[t[0]], t[1:])  # type: ignore[no-any-return]  # as _make does, without its call
