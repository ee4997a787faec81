"""The Open Inference Protocol's HTTP routes (`/v2/...`), on the node's aiohttp app.

Handlers decode, call the :class:`~node.oip.plane.OipPlane`, encode. Errors are rendered
as OIP wants them, `{"error": message}`, with the status of :data:`node.errors.ERROR_TABLE`;
so is a bug of ours (500, logged), which the app's middleware would answer in the Dataiku
API's shape.
Triton's binary tensor extension: a body whose first `Inference-Header-Content-Length`
bytes are the JSON request, followed by the data of the inputs that say `binary_data_size`;
outputs asked for with `binary_data` (or all of them with `binary_data_output`) come back the
same way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from node import errors, ops
from node.auth import key_from_header
from node.http.app import MAX_BODY, expect_within_limit, json_response
from node.http.body import loads_body
from node.oip import tensors
from node.oip.plane import OipPlane

log = logging.getLogger("node.oip")
OIP = web.AppKey("oip", OipPlane)
HEADER_LENGTH = "Inference-Header-Content-Length"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _oip_errors(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except web.HTTPRequestEntityTooLarge:
            exc: errors.ApiNodeError = errors.PayloadTooLarge(
                f"the request body is over this node's limit of {request.app[MAX_BODY]} bytes (--max-body-mb)"
            )
        except errors.ApiNodeError as e:
            exc = e
        except web.HTTPException as e:  # aiohttp's own (a body it cannot read, ...)
            return json_response({"error": e.reason}, status=e.status)
        except Exception as e:  # a bug of ours: still an OIP error, never the Dataiku shape
            log.exception("unhandled error on %s %s", request.method, request.path)
            exc = errors.InternalError(f"internal error: {type(e).__name__}")
        return _oip_error(exc)

    return wrapper


def _oip_error(exc: errors.ApiNodeError) -> web.Response:
    retry_after = errors.retry_after(exc)
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    message = exc.message.encode("utf-8", "backslashreplace").decode()
    return json_response({"error": message}, status=errors.kind_of(exc).http_status, headers=headers)


def _who(request: web.Request) -> ops.Caller:
    return ops.Caller(key_from_header(request.headers.get("Authorization")), request.remote, "oip-http")


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


@_oip_errors
async def server_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[OIP].server_metadata())


@_oip_errors
async def live(request: web.Request) -> web.Response:
    ok = request.app[OIP].live()
    return json_response({"live": ok}, status=200 if ok else 503)


@_oip_errors
async def ready(request: web.Request) -> web.Response:
    ok = request.app[OIP].ready()
    return json_response({"ready": ok}, status=200 if ok else 503)


@_oip_errors
async def model_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[OIP].model_metadata(*_model(request), _who(request)))


@_oip_errors
async def model_ready(request: web.Request) -> web.Response:
    name, version = _model(request)
    ok = request.app[OIP].model_ready(name, version, _who(request))
    return json_response({"name": name, "ready": ok}, status=200 if ok else 503)


@_oip_errors
async def model_config(request: web.Request) -> web.Response:
    return json_response(request.app[OIP].model_config(*_model(request), _who(request)))


@_oip_errors
async def model_stats(request: web.Request) -> web.Response:
    name, version = request.match_info.get("model", ""), request.match_info.get("version", "")
    return json_response({"model_stats": request.app[OIP].statistics(name, version, _who(request))})


@_oip_errors
async def repository_index(request: web.Request) -> web.Response:
    body = loads_body(await request.read())
    return json_response(request.app[OIP].index(ready_only=body.get("ready") is True))


def _params(doc: dict[str, Any]) -> dict[str, Any]:
    p = doc.get("parameters")
    return p if isinstance(p, dict) else {}


def _split_body(request: web.Request, raw: bytes) -> tuple[bytes, bytes]:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return raw, b""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= len(raw):
        raise errors.BadRequest(f"{HEADER_LENGTH} must be a length within the body ({len(raw)} bytes), got {value!r}")
    return raw[:n], raw[n:]


def _inputs(doc: dict[str, Any], binary: bytes) -> list[tensors.Tensor]:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise errors.BadRequest("the request needs 'inputs': a list of tensors")
    out, pos = [], 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise errors.BadRequest(f"inputs[{i}] must be an object")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        size = _params(t).get("binary_data_size") if "parameters" in t else None
        if size is not None:
            if type(size) is not int or size < 0 or pos + size > len(binary):
                raise errors.BadRequest(f"inputs[{i}]: binary_data_size {size!r} runs past the binary data")
            out.append(tensors.from_raw(name, datatype, shape, binary[pos : pos + size]))
            pos += size
        elif "data" in t:
            out.append(tensors.from_json(name, datatype, shape, t["data"]))
        else:
            raise errors.BadRequest(f"inputs[{i}] needs 'data' (or a binary_data_size)")
    if pos != len(binary):
        raise errors.BadRequest(f"{len(binary) - pos} bytes of binary data belong to no input")
    return out


def _binary_outputs(doc: dict[str, Any], params: dict[str, Any]) -> tuple[list[str] | None, dict[str, bool], bool]:
    """The outputs asked for, which of them in binary, and the default for the others."""
    default = params.get("binary_data_output") is True
    asked = doc.get("outputs")
    if asked is None:
        return None, {}, default
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise errors.BadRequest("'outputs' must be a list of {\"name\": ...}")
    binary = {}
    for o in asked:
        flag = _params(o).get("binary_data")
        if isinstance(flag, bool):
            binary[o["name"]] = flag
    return [o["name"] for o in asked], binary, default


@_oip_errors
async def infer(request: web.Request) -> web.Response:
    plane = request.app[OIP]
    mi = request.match_info
    head, binary = _split_body(request, await request.read())
    doc = loads_body(head, plane.dp.limits)
    inputs = _inputs(doc, binary)
    params = _params(doc)
    names, binary_of, binary_default = _binary_outputs(doc, params)
    request_id = doc.get("id")
    result = await plane.infer(
        mi["model"],
        mi.get("version", ""),
        inputs,
        _who(request),
        request_id=request_id if isinstance(request_id, str) else "",
        parameters=params,
        outputs=names,
    )
    answer: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
    if result.id:
        answer["id"] = result.id
    if not binary_of and not binary_default:  # the common answer: every output as JSON
        answer["outputs"] = [
            {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": tensors.to_json_data(t)}
            for t in result.outputs
        ]
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
    outputs, blobs = [], []
    for t in result.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if binary_of.get(t.name, binary_default):
            blob = tensors.to_raw(t)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensors.to_json_data(t)
        outputs.append(entry)
    answer["outputs"] = outputs
    header = orjson.dumps(answer)
    if not blobs:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=b"".join([header, *blobs]),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def add_oip_routes(app: web.Application, plane: OipPlane) -> None:
    app[OIP] = plane
    r = app.router
    # Inference first: routes sharing the prefix /v2/models are tried in the order they were
    # added (aiohttp indexes routes by their static prefix), and this one is the hot path.
    for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_post(model + "/infer", infer, expect_handler=expect_within_limit(_oip_error))
    r.add_get("/v2", server_metadata)
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2/models/stats", model_stats)
    r.add_post("/v2/repository/index", repository_index)
    for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        r.add_get(model, model_metadata)
        r.add_get(model + "/ready", model_ready)
        r.add_get(model + "/config", model_config)
        r.add_get(model + "/stats", model_stats)
