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
