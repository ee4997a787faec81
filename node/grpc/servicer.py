"""gRPC servicers: decode the message, call the data plane, encode; errors mapped once.

`mapped` turns an :class:`~node.errors.ApiNodeError` into the status code of the error
table. A cancelled call or an expired deadline cancels the handler, which takes the
request out of its queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from node import errors
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc
from node.auth import key_from_header
from node.dataplane import DataPlane
from node.grpc import convert

log = logging.getLogger("node.grpc")
T = TypeVar("T")
STREAM_WINDOW = 64  # messages of one PredictStream in flight at once (read ahead, queued, batched)


def mapped(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
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
    if request.HasField("context"):
        body["context"] = convert.struct_to_py(request.context)
    dispatch = convert.dispatch_to_py(request)
    if dispatch:
        body["dispatch"] = dispatch
    if request.return_enriched:
        body["returnEnriched"] = True
    if request.HasField("explanations"):
        body["explanations"] = convert.explanations_to_py(request)
    return body


def _item(item: pb.PredictItem) -> dict[str, Any]:
    out: dict[str, Any] = {"features": convert.features_to_py(item.features)}
    if item.HasField("context"):
        out["context"] = convert.struct_to_py(item.context)
    return out


def _predict_response(out: dict[str, Any], request_id: str = "") -> pb.PredictResponse:
    return pb.PredictResponse(
        result=convert.prediction_to_pb(out["result"]),
        timing=out["timing"],
        api_context=convert.context_to_pb(out["apiContext"]),
        request_id=request_id,
    )


def caller(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, Any]:
    """The API key (`authorization: Bearer KEY` metadata) and address of a gRPC caller."""
    header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
    return {"api_key": key_from_header(header if isinstance(header, str) else None), "peer": context.peer()}


class ApiNodeServicer(apinode_pb2_grpc.ApiNodeServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    @mapped
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        out = await self.dp.call(
            "predict", request.service, request.endpoint, _predict_body(request), protocol="grpc", **caller(context)
        )
        return _predict_response(out, request.request_id)

    @mapped
    async def PredictMulti(
        self, request: pb.PredictMultiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictMultiResponse:
        body: dict[str, Any] = {"items": [_item(i) for i in request.items]}
        dispatch = convert.dispatch_to_py(request)
        if dispatch:
            body["dispatch"] = dispatch
        if request.return_enriched:
            body["returnEnriched"] = True
        if request.HasField("explanations"):
            body["explanations"] = convert.explanations_to_py(request)
        out = await self.dp.call(
            "predict-multi", request.service, request.endpoint, body, protocol="grpc", **caller(context)
        )
        return pb.PredictMultiResponse(
            results=[convert.prediction_to_pb(r) for r in out["results"]],
            timing=out["timing"],
            api_context=convert.context_to_pb(out["apiContext"]),
        )

    async def PredictStream(
        self,
        request_iterator: AsyncIterator[pb.PredictRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PredictResponse]:
        """Pipelined: a reader takes messages ahead of the answers, up to STREAM_WINDOW in
        flight at once, each queued (and batched with everything else queued) as soon as it
        is read; answers go back in the order of the messages, each with its request_id. With
        the window full the reader stops reading, so gRPC flow control holds the client."""
        who = caller(context)
        window = asyncio.Semaphore(STREAM_WINDOW)
        inflight: asyncio.Queue[asyncio.Future[pb.PredictResponse] | None] = asyncio.Queue()

        async def read() -> None:
            messages = request_iterator.__aiter__()
            try:
                while True:
                    await window.acquire()  # a read waits for a free place in the window
                    try:
                        request = await messages.__anext__()
                    except StopAsyncIteration:
                        return
                    inflight.put_nowait(asyncio.ensure_future(self._stream_one(request, who)))
            finally:
                inflight.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await inflight.get()) is not None:
                response = await answer
                window.release()
                yield response
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            while not inflight.empty():  # the caller went away: what is queued leaves its queue
                left = inflight.get_nowait()
                if left is not None:
                    left.cancel()

    async def _stream_one(self, request: pb.PredictRequest, who: dict[str, Any]) -> pb.PredictResponse:
        try:
            out = await self.dp.call(
                "predict", request.service, request.endpoint, _predict_body(request), protocol="grpc-stream", **who
            )
            return _predict_response(out, request.request_id)
        except errors.ApiNodeError as exc:
            kind = errors.kind_of(exc)
            return pb.PredictResponse(
                request_id=request.request_id,
                error=pb.Error(code=kind.grpc_code.name, error_type=kind.error_type, message=exc.message),
            )
        except Exception as exc:  # a bug answers this message, not the whole stream
            log.exception("unhandled error in PredictStream")
            return pb.PredictResponse(
                request_id=request.request_id,
                error=pb.Error(
                    code="INTERNAL", error_type="INTERNAL_ERROR", message=f"internal error: {type(exc).__name__}"
                ),
            )

    @mapped
    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        args = convert.struct_to_py(request.arguments)
        out = await self.dp.call(
            "run",
            request.service,
            request.endpoint,
            args,
            protocol="grpc",
            dispatch=convert.dispatch_to_py(request),
            **caller(context),
        )
        return pb.RunResponse(
            response=convert.json_to_value(out["response"]),
            timing=out["timing"],
            api_context=convert.context_to_pb(out["apiContext"]),
        )

    @mapped
    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.LookupResponse:
        items = [{"data": convert.features_to_py(i.data)} for i in request.items]
        body: dict[str, Any] = items[0] if len(items) == 1 else {"items": items}
        dispatch = convert.dispatch_to_py(request)
        if dispatch:
            body["dispatch"] = dispatch
        verb = "lookup" if len(items) == 1 else "lookup-multi"
        out = await self.dp.call(verb, request.service, request.endpoint, body, protocol="grpc", **caller(context))
        return pb.LookupResponse(
            results=[convert.lookup_result_to_pb(r) for r in out["results"]],
            timing=out["timing"],
            api_context=convert.context_to_pb(out["apiContext"]),
        )

    @mapped
    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.QueryResponse:
        out = await self.dp.call(
            "query",
            request.service,
            request.endpoint,
            convert.features_to_py(request.parameters),
            protocol="grpc",
            dispatch=convert.dispatch_to_py(request),
            **caller(context),
        )
        return convert.query_to_pb(out)
