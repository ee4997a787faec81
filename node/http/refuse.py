"""The cheap HTTP refusal: a request to a full pool is answered 503 before its body is read.

Past capacity a node lives on how cheaply it says no. The ordinary path reads and parses
the body, checks the key, resolves the generation, and only then asks the pool, whose
refusal is an exception the error middleware renders. Here `user_call` first asks
:func:`refuse_early`, which decides from the URL alone and the pool's state, and answers
the very JSON the middleware would (the pool's message, with its live counts: one orjson
call) with prepared headers, without raising, catching or formatting a traceback. It refuses only what the ordinary path would refuse as OVERLOADED, and counts it
the same way (the pool's `rejected`, `apinode_requests_total{outcome="OVERLOADED"}` and the
duration histogram); anything else, or any doubt, returns None and the ordinary path runs.

When it decides (everything else goes the ordinary way):
- the URL names a verb of the data plane, a service that is enabled and serves one
  generation, the only one loaded (so no dispatch in the body can pick another pool), and an
  endpoint with a worker pool; no `X-Dispatch-Forced-Generation` header;
- the node keeps no query log (its entries hold the request's features: the body is needed);
- the pool says it is overloaded (`Pool.overload`, which `Pool.refuse_if_full` raises: queue
  full, or the front is behind and the pool queues);
- the caller's key is accepted: checked before refusing, as the ordinary path does, so a
  caller without a valid key learns nothing about the service's load and gets its 401 from
  the ordinary path. It is cheap (a header, a sha256, a dict of digests), a refusal still
  costs a fraction of a served request.

A body a refused request carries is not looked at: under overload a malformed body, or a
`dispatch.forcedGeneration` naming no loaded generation, is refused 503 like any other,
where the ordinary path would have answered 400/404 — the caller retries and learns then.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from node import errors
from node.auth import key_from_header
from node.dataplane import DataPlane
from node.http.codec import VERBS

if TYPE_CHECKING:
    from node.supervisor.pool import Pool

_VERBS = frozenset(VERBS)
_STATUS = errors.kind_of(errors.Overloaded("")).http_status
_headers: dict[int, CIMultiDict[str]] = {}  # by Retry-After: a pool's refusals share one of two


def _answer(refusal: errors.Overloaded) -> web.Response:
    """What the error middleware renders for `refusal`, without raising it: the same JSON
    (one orjson call: the message keeps the pool's live counts), prepared headers."""
    retry_after = max(1, round(refusal.retry_after))
    headers = _headers.get(retry_after)
    if headers is None:
        headers = _headers[retry_after] = CIMultiDict(
            {"Content-Type": "application/json", "Retry-After": str(retry_after)}
        )
    return web.Response(body=orjson.dumps(refusal.to_json()), status=_STATUS, headers=headers)


def overloaded(
    dataplane: DataPlane, verb: str, service: str, endpoint: str
) -> tuple[Pool, errors.Overloaded, str] | None:
    """The pool, its refusal (`Pool.overload`) and the generation when the ordinary path
    would refuse this call as OVERLOADED and the URL alone says so; None otherwise. Counts
    nothing: the caller counts the refusal it answers."""
    if dataplane.querylog is not None or verb not in _VERBS:
        return None
    svc = dataplane.registry.services.get(service)
    if svc is None or not svc.state.enabled or len(svc.loaded) != 1:
        return None
    gen = next(iter(svc.loaded.values()))
    entries: list[dict[str, Any]] = (svc.state.mapping or {}).get("entries") or []
    if len(entries) != 1 or entries[0]["generation"] != gen.version:
        return None
    ep = gen.endpoints.get(endpoint)
    if ep is None or ep.pool is None:
        return None
    refusal = ep.pool.overload()
    return None if refusal is None else (ep.pool, refusal, gen.version)


def refuse_early(request: web.Request, dataplane: DataPlane) -> web.Response | None:
    """A prepared 503 OVERLOADED for a request the ordinary path would refuse as such, or
    None: then the ordinary path serves (or refuses) it."""
    t0 = time.perf_counter()
    mi = request.match_info
    service, endpoint = mi["service"], mi["endpoint"]
    found = overloaded(dataplane, mi["verb"], service, endpoint)
    if found is None or "X-Dispatch-Forced-Generation" in request.headers:
        return None
    if not dataplane.keys.accepts(service, key_from_header(request.headers.get("Authorization"))):
        return None
    pool, refusal, generation = found
    pool.stats.rejected += 1  # as `Pool.refuse_if_full` counts the refusals it raises
    dataplane.metrics.observe(service, endpoint, generation, "http", "OVERLOADED", time.perf_counter() - t0)
    return _answer(refusal)
