"""gRPC servicers: decode the message, call the data plane, encode; errors mapped once.

`_mapped` turns an :class:`~node.errors.ApiNodeError` into the status code of the error
table. A cancelled call or an expired deadline cancels the handler, which takes the
request out of its queue.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson

from node import errors
from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc, apinode_pb2_grpc
from node._proto.apinode.v1 import apinode_pb2 as pb
from node.dataplane import DataPlane
from node.grpc import convert

log = logging.getLogger("node.grpc")
T = TypeVar("T")


def _mapped(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await fn(self, request, context)
        except errors.ApiNodeError as exc:
            await context.abort(errors.kind_of(exc).grpc_code, exc.message)
        except Exception as exc:
            log.exception("unhandled error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        raise AssertionError("unreachable")  # abort raises

    return wrapper


def _predict_body(request: pb.PredictRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"features": convert.features_to_py(request.features)}
    dispatch = convert.dispatch_to_py(request)
    if dispatch:
        body["dispatch"] = dispatch
    return body


def _predict_response(out: dict[str, Any], request_id: str = "") -> pb.PredictResponse:
    return pb.PredictResponse(
        result=convert.prediction_to_pb(out["result"]),
        timing=out["timing"],
        api_context=convert.context_to_pb(out["apiContext"]),
        request_id=request_id,
    )


class ApiNodeServicer(apinode_pb2_grpc.ApiNodeServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    @_mapped
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        out = await self.dp.predict(request.service, request.endpoint, _predict_body(request))
        return _predict_response(out, request.request_id)

    @_mapped
    async def PredictMulti(
        self, request: pb.PredictMultiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictMultiResponse:
        body: dict[str, Any] = {
            "items": [{"features": convert.features_to_py(i.features)} for i in request.items]
        }
        dispatch = convert.dispatch_to_py(request)
        if dispatch:
            body["dispatch"] = dispatch
        out = await self.dp.predict_multi(request.service, request.endpoint, body)
        return pb.PredictMultiResponse(
            results=[convert.prediction_to_pb(r) for r in out["results"]],
            timing=out["timing"],
            api_context=convert.context_to_pb(out["apiContext"]),
        )

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.PredictResponse]:
        # One at a time, in order: a client wanting more throughput opens several streams
        # or pipelines (the node batches across streams).
        async for request in request_iterator:
            try:
                out = await self.dp.predict(
                    request.service, request.endpoint, _predict_body(request)
                )
                yield _predict_response(out, request.request_id)
            except errors.ApiNodeError as exc:
                kind = errors.kind_of(exc)
                yield pb.PredictResponse(
                    request_id=request.request_id,
                    error=pb.Error(
                        code=kind.grpc_code.name, error_type=kind.error_type, message=exc.message
                    ),
                )

    @_mapped
    async def Run(
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RunResponse:
        args = convert.struct_to_py(request.arguments)
        raw, meta = await self.dp.run(request.service, request.endpoint, args)
        return pb.RunResponse(
            response=convert.json_to_value(raw),
            timing=meta["timing"],
            api_context=convert.context_to_pb(meta["apiContext"]),
        )


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    @_mapped
    async def Status(
        self, request: admin_pb2.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.StatusResponse:
        doc = self.dp.status()
        eps = []
        for sid, svc in doc["services"].items():
            for version, endpoints in svc["generations"].items():
                for eid, st in endpoints.items():
                    eps.append(
                        admin_pb2.EndpointStatus(
                            service=sid,
                            generation=version,
                            endpoint=eid,
                            type=st["type"],
                            ready=st["ready"],
                            not_ready_reason=st["notReadyReason"] or "",
                            workers_busy=st["workers"]["busy"],
                            workers_idle=st["workers"]["idle"],
                            workers_starting=st["workers"]["starting"],
                            queue_depth=st["queueDepth"],
                            served=st["served"],
                            rejected=st["rejected"],
                            timed_out=st["timed_out"],
                            crashed=st["crashed"],
                            restarts=st["restarts"],
                        )
                    )
        return admin_pb2.StatusResponse(
            ready=doc["ready"], endpoints=eps, json=orjson.dumps(doc).decode()
        )
