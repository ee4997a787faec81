"""aiohttp application: routes, the error middleware, the DSS headers.

Handlers decode the body into a typed request (:mod:`node.http.codec`), call the
:class:`~node.dataplane.DataPlane`, encode the typed result. Every error is an :class:`~node.errors.ApiNodeError` rendered once by `_errors` as
`{"errorType", "message", "detailedMessage"}` with the status of the error table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import HttpVersion11, web

from node import errors, ops
from node.auth import key_from_header
from node.dataplane import DataPlane
from node.health import not_alive
from node.http import codec
from node.http.body import loads_body
from node.http.refuse import refuse_early

log = logging.getLogger("node.http")
DATAPLANE = web.AppKey("dataplane", DataPlane)
DATA_DIR = web.AppKey("data_dir", Path)
MAX_BODY = web.AppKey("max_body", int)
DSS_HEADERS = {"DSS-API-Version": "v1", "DSS-Version": "apinode-0.1.0"}
_JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


def error_response(exc: errors.ApiNodeError) -> web.Response:
    kind = errors.kind_of(exc)
    retry_after = errors.retry_after(exc)
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    doc = exc.to_json()
    try:
        return json_response(doc, status=kind.http_status, headers=headers)
    except orjson.JSONEncodeError:  # a caller's text that is not Unicode (a header's lone surrogate)
        doc = {k: v.encode("utf-8", "backslashreplace").decode() for k, v in doc.items()}
        return json_response(doc, status=kind.http_status, headers=headers)


def expect_within_limit(render: Callable[[errors.ApiNodeError], web.Response] = error_response) -> ExpectHandler:
    """The route's `Expect: 100-continue` handler: a body announced over the node's limit is
    refused (413, `render`ed in the route's API format) instead of being invited with `100
    Continue` (aiohttp's default invites it, and only then do middlewares run)."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        expect = request.headers.get("Expect", "").lower()
        if request.version != HttpVersion11:
            return None  # HTTP/1.0 has no 100 Continue
        if expect != "100-continue":
            return json_response(
                {"errorType": "BAD_REQUEST", "message": f"unknown expectation {expect!r}", "detailedMessage": ""},
                status=417,
            )
        limit, length = request.app[MAX_BODY], request.content_length
        if length is not None and length > limit:
            response = render(
                errors.PayloadTooLarge(
                    f"the request body is over this node's limit of {limit} bytes (--max-body-mb): "
                    f"it announces {length} bytes"
                )
            )
            response.force_close()  # the body is never read: this connection is done
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the answer's size starts after it
        return None

    return expect


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiNodeError as exc:
        if errors.kind_of(exc).http_status in (500, 504):  # 503s are load shedding: counted in metrics, not logged
            log.warning("%s %s -> %s: %s", request.method, request.path, type(exc).__name__, exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:  # aiohttp stopped reading at client_max_size
            limit = request.app[MAX_BODY]
            return error_response(
                errors.PayloadTooLarge(f"the request body is over this node's limit of {limit} bytes (--max-body-mb)")
            )
        err_type = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "BAD_REQUEST")
        body = {
            "errorType": err_type,
            "message": exc.reason,
            "detailedMessage": f"{request.method} {request.path}: {exc.reason}",
        }
        return json_response(body, status=exc.status)
    except Exception as exc:  # a bug of ours: never a bare 500 page, never a dead node
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(errors.InternalError(f"internal error: {type(exc).__name__}"))


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(DSS_HEADERS)


def _caller(request: web.Request) -> ops.Caller:
    return ops.Caller(key_from_header(request.headers.get("Authorization")), request.remote, "http")


async def user_call(request: web.Request) -> web.Response:
    mi = request.match_info
    dataplane = request.app[DATAPLANE]
    if (refused := refuse_early(request, dataplane)) is not None:  # a full pool: 503 before the body is read
        return refused
    body = loads_body(await request.read(), dataplane.limits)
    verb = codec.VERBS.get(mi["verb"])
    if verb is None:
        raise codec.refuse_verb(mi["verb"])
    typed = verb.decode(mi["service"], mi["endpoint"], body, request.headers)
    return json_response(codec.encode(await verb.call(dataplane, typed, _caller(request))))


async def predict_simple(request: web.Request) -> web.Response:
    """`GET .../predict-simple?feature=value&...`: a quick test from a browser."""
    mi = request.match_info
    typed = ops.PredictRequest(mi["service"], mi["endpoint"], dict(request.query))
    return json_response(codec.encode(await request.app[DATAPLANE].predict(typed, _caller(request))))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DATAPLANE].metrics.render(), content_type="text/plain", charset="utf-8")


async def is_alive(request: web.Request) -> web.Response:
    reason = not_alive(request.app[DATA_DIR])
    if reason is not None:
        return json_response({"alive": False, "reason": reason}, status=503)
    return json_response({"alive": True})


async def ready(request: web.Request) -> web.Response:
    ok, reasons = request.app[DATAPLANE].readiness()
    return json_response({"ready": ok, "notReady": reasons}, status=200 if ok else 503)


def build_app(dataplane: DataPlane, data_dir: Path, *, client_max_size: int = 32 * 1024 * 1024) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=client_max_size)
    app[DATAPLANE] = dataplane
    app[DATA_DIR] = data_dir
    app[MAX_BODY] = client_max_size
    app.on_response_prepare.append(_add_headers)
    for prefix in ("/public/api/v1", "//public/api/v1"):  # the Dataiku client may double the slash
        app.router.add_post(prefix + "/{service}/{endpoint}/{verb}", user_call, expect_handler=expect_within_limit())
        app.router.add_get(prefix + "/{service}/{endpoint}/predict-simple", predict_simple)
    for path in ("/isAlive", "/isAlive/"):
        app.router.add_get(path, is_alive)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
