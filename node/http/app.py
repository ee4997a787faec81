"""aiohttp application: routes, the error middleware, the DSS headers.

Handlers decode the body, call the :class:`~node.dataplane.DataPlane`, encode the answer.
Every error is an :class:`~node.errors.ApiNodeError` rendered once by `_errors` as
`{"errorType", "message", "detailedMessage"}` with the status of the error table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from node import errors
from node.auth import key_from_header
from node.dataplane import FLAT_VERBS, DataPlane, loads_body
from node.http.refuse import refuse_early

log = logging.getLogger("node.http")
DATAPLANE = web.AppKey("dataplane", DataPlane)
DATA_DIR = web.AppKey("data_dir", Path)
MAX_BODY = web.AppKey("max_body", int)
DSS_HEADERS = {"DSS-API-Version": "v1", "DSS-Version": "apinode-0.1.0"}
_JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


def error_response(exc: errors.ApiNodeError) -> web.Response:
    kind = errors.kind_of(exc)
    headers = None
    if isinstance(exc, errors.Overloaded):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    doc = exc.to_json()
    try:
        return json_response(doc, status=kind.http_status, headers=headers)
    except orjson.JSONEncodeError:  # a caller's text that is not Unicode (a header's lone surrogate)
        doc = {k: v.encode("utf-8", "backslashreplace").decode() for k, v in doc.items()}
        return json_response(doc, status=kind.http_status, headers=headers)


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


async def user_call(request: web.Request) -> web.Response:
    mi = request.match_info
    dataplane = request.app[DATAPLANE]
    if (refused := refuse_early(request, dataplane)) is not None:  # a full pool: 503 before the body is read
        return refused
    body = loads_body(await request.read(), dataplane.limits)
    dispatch = None
    if mi["verb"] in FLAT_VERBS:  # the body is the arguments: dispatch travels in headers
        dispatch = {
            k: v
            for k, v in (
                ("forcedGeneration", request.headers.get("X-Dispatch-Forced-Generation")),
                ("dispatchKey", request.headers.get("X-Dispatch-Key")),
            )
            if v
        } or None
    out = await dataplane.call(
        mi["verb"],
        mi["service"],
        mi["endpoint"],
        body,
        protocol="http",
        dispatch=dispatch,
        api_key=key_from_header(request.headers.get("Authorization")),
        peer=request.remote,
    )
    if mi["verb"] == "run":
        out = {**out, "response": orjson.Fragment(out["response"])}
    return json_response(out)


async def predict_simple(request: web.Request) -> web.Response:
    """`GET .../predict-simple?feature=value&...`: a quick test from a browser."""
    mi = request.match_info
    body = {"features": dict(request.query)}
    out = await request.app[DATAPLANE].call(
        "predict",
        mi["service"],
        mi["endpoint"],
        body,
        protocol="http",
        api_key=key_from_header(request.headers.get("Authorization")),
        peer=request.remote,
    )
    return json_response(out)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DATAPLANE].metrics.render(), content_type="text/plain", charset="utf-8")


async def is_alive(request: web.Request) -> web.Response:
    if (request.app[DATA_DIR] / "apinode-not-alive.txt").exists():
        return json_response({"alive": False, "reason": "apinode-not-alive.txt present"}, status=503)
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
        app.router.add_post(prefix + "/{service}/{endpoint}/{verb}", user_call)
        app.router.add_get(prefix + "/{service}/{endpoint}/predict-simple", predict_simple)
    for path in ("/isAlive", "/isAlive/"):
        app.router.add_get(path, is_alive)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    from node.http.openapi import add_openapi_routes  # it imports this module's keys

    add_openapi_routes(app)
    return app
