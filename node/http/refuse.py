"""The cheap HTTP refusal: a request to a full pool is answered 503 before its body is parsed.

Past capacity a node lives on how cheaply it says no. The ordinary path parses the body,
checks the key, resolves the generation, and only then asks the pool, whose refusal is an
exception the error middleware renders. Here `user_call` first asks :func:`refuse_early`:
the data plane decides from the URL alone (:meth:`node.dataplane.DataPlane.refuse_early`,
which also says when it cannot and counts what it refuses), and this module answers the
very JSON the middleware would (the pool's message, with its live counts: one orjson call)
with prepared headers, without raising, catching or formatting a traceback.

A body a refused request carries is not looked at: under overload a malformed body, or a
`dispatch.forcedGeneration` naming no loaded generation, is refused 503 like any other,
where the ordinary path would have answered 400/404 — the caller retries and learns then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import orjson
from aiohttp import web
from multidict import CIMultiDict

from node import errors
from node.auth import key_from_header
from node.dataplane import DataPlane
from node.http.codec import VERBS

_STATUS = errors.kind_of(errors.Overloaded("")).http_status
_headers: dict[str | None, CIMultiDict[str]] = {}  # by Retry-After: a pool's refusals share one of two


def _answer(refusal: errors.Overloaded) -> web.Response:
    """What the error middleware renders for `refusal`, without raising it: the same JSON
    (one orjson call: the message keeps the pool's live counts), prepared headers."""
    retry_after = errors.retry_after(refusal)
    headers = _headers.get(retry_after)
    if headers is None:
        headers = _headers[retry_after] = CIMultiDict({"Content-Type": "application/json"})
        if retry_after is not None:
            headers["Retry-After"] = retry_after
    return web.Response(body=orjson.dumps(refusal.to_json()), status=_STATUS, headers=headers)


def refuse_early(request: web.Request, dataplane: DataPlane) -> web.Response | None:
    """A prepared 503 OVERLOADED for a request the ordinary path would refuse as such, or
    None: then the ordinary path serves (or refuses) it."""
    mi = request.match_info
    if mi["verb"] not in VERBS:
        return None
    refusal = dataplane.refuse_early(
        mi["service"],
        mi["endpoint"],
        key_from_header(request.headers.get("Authorization")),
        "http",
        forced="X-Dispatch-Forced-Generation" in request.headers,
    )
    return None if refusal is None else _answer(refusal)


# --- The refusal before aiohttp: from the bytes of a request, on its connection ---------------
#
# Past capacity the cost that matters is the front's per-request machinery: a refusal by the
# handler above still pays aiohttp's parser (a URL object, a header multidict), a Request, the
# middlewares and the response's preparation, about what a bare aiohttp 503 costs (~70 µs on
# one core), close to what serving costs. A node offered twice its capacity then spends its
# CPU saying no and serves little. So the HTTP connection handler (node.http.guard) first
# looks at the raw bytes of a request that arrived whole, in one read, on a connection at a
# request boundary, and when the data plane refuses it, writes a prepared answer: no parser,
# no Request, no task. Anything unusual (a split or pipelined request, chunked bodies, an
# expectation, a forced generation, `Connection: close`, HTTP/1.0, escapes in the path) is
# left to aiohttp, which then serves or refuses it the ordinary way.

_PREFIXES = (b"/public/api/v1/", b"//public/api/v1/")
_REASON = b"Service Unavailable"


class RawHead(NamedTuple):
    """The head of the request at the start of a read, as far as the fast refusal and the
    connection's framing need it. `size` is the request's length (head and body)."""

    size: int
    method: bytes
    target: bytes
    version: bytes
    authorization: bytes | None
    plain: bool  # nothing that only aiohttp handles right (an expectation, an upgrade, ...)


def raw_head(data: bytes) -> RawHead | None:
    """The head at the start of `data`, or None when it is not complete there or not one
    this module frames with certainty (then the connection leaves framing to aiohttp): no
    `Transfer-Encoding`, at most one `Content-Length` of digits, no folded lines."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    eol = data.find(b"\r\n")
    first = data[:eol].split(b" ")
    if len(first) != 3 or not first[0].isalpha():
        return None
    # The header lines, each after a CRLF: a name is found at a line's start, whatever its case.
    head = data[eol : end + 2].lower()
    if b"\r\n " in head or b"\r\n\t" in head or b"\r\ntransfer-encoding:" in head:
        return None
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        if head.find(b"\r\ncontent-length:", at + 17) >= 0:
            return None
        value = head[at + 17 : head.index(b"\r\n", at + 17)].strip()
        if not value.isdigit():
            return None
        length = int(value)
    authorization = None
    at = head.find(b"\r\nauthorization:")
    if at >= 0:  # its value as sent (a key's case matters)
        authorization = data[eol + at + 16 : eol + head.index(b"\r\n", at + 16)].strip()
    plain = not (b"\r\nexpect:" in head or b"\r\nupgrade:" in head or b"\r\nx-dispatch-forced-generation:" in head)
    at = head.find(b"\r\nconnection:")
    if at >= 0 and (
        head[at + 13 : head.index(b"\r\n", at + 13)].strip() != b"keep-alive"
        or head.find(b"\r\nconnection:", at + 13) >= 0
    ):
        plain = False
    return RawHead(end + 4 + length, first[0], first[1], first[2], authorization, plain)


def _raw_answer(refusal: errors.Overloaded, extra: bytes) -> bytes:
    body = orjson.dumps(refusal.to_json())
    retry_after = errors.retry_after(refusal)
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n" % (_STATUS, _REASON)
    if retry_after is not None:
        head += b"Retry-After: " + retry_after.encode() + b"\r\n"
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


RawVerdict = bytes | Callable[[], None] | None


def raw_refuser(dataplane: DataPlane, headers: dict[str, str]) -> Callable[[RawHead], RawVerdict]:
    """The function the connection handler asks about a whole request: the bytes of a
    prepared 503 OVERLOADED (with `headers`, the DSS ones every answer carries); or, let
    in, the function to call once it is answered (DataPlane.admit_early); or None."""
    extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    last: list[tuple[errors.Overloaded, bytes] | None] = [None]  # a pool reuses a refusal (Pool._prepared)

    def answer(refusal: errors.Overloaded) -> bytes:
        prepared = last[0]
        if prepared is None or prepared[0] is not refusal:
            prepared = last[0] = (refusal, _raw_answer(refusal, extra))
        return prepared[1]

    def refuse(head: RawHead) -> RawVerdict:
        if not head.plain or head.method != b"POST" or head.version != b"HTTP/1.1":
            return None
        target = head.target
        if target.startswith(_PREFIXES[0]):
            rest = target[len(_PREFIXES[0]) :]
        elif target.startswith(_PREFIXES[1]):
            rest = target[len(_PREFIXES[1]) :]
        else:
            return None
        parts = rest.split(b"/")
        if len(parts) != 3 or b"%" in rest or b"?" in rest or not rest.isascii():
            return None
        service, endpoint, verb = (p.decode("ascii") for p in parts)
        if verb not in VERBS:
            return None
        auth = head.authorization
        verdict = dataplane.admit_early(
            service, endpoint, key_from_header(auth.decode("latin-1") if auth is not None else None), "http"
        )
        return answer(verdict) if isinstance(verdict, errors.Overloaded) else verdict

    return refuse
