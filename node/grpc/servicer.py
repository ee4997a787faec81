"""gRPC servicers: decode the message, call the data plane, encode; errors mapped once.

Messages become the typed requests of :mod:`node.ops` and results go back through
:mod:`node.grpc.convert`. `mapped` turns an :class:`~node.errors.ApiNodeError` into the
status code of the error table (a refusal's Retry-After in the trailing metadata
`retry-after`), and `message_error` does the same for one message of a stream. A cancelled
call or an expired deadline cancels the handler, which takes the request out of its queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from node import errors, ops
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
            retry_after = errors.retry_after(exc)
            trailing = (("retry-after", retry_after),) if retry_after is not None else ()
            await context.abort(errors.kind_of(exc).grpc_code, exc.message, trailing)
        except Exception as exc:
            log.exception("unhandled error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        raise AssertionError("unreachable")  # abort raises

    return wrapper


def message_error(exc: Exception, where: str) -> tuple[errors.ErrorKind, str]:
    """The kind and message of one failed message of a stream, which goes on (PredictStream,
    ModelStreamInfer): an error of the table as on a unary call; a bug of ours is logged
    and answered as an internal error."""
    if not isinstance(exc, errors.ApiNodeError):
        log.error("unhandled error in %s", where, exc_info=exc)
        exc = errors.InternalError(f"internal error: {type(exc).__name__}")
    return errors.kind_of(exc), exc.message


def caller(context: grpc.aio.ServicerContext[Any, Any], protocol: str = "grpc") -> ops.Caller:
    """The API key (`authorization: Bearer KEY` metadata) and address of a gRPC caller."""
    header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
    return ops.Caller(key_from_header(header if isinstance(header, str) else None), context.peer(), protocol)


class ApiNodeServicer(apinode_pb2_grpc.ApiNodeServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    @mapped
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        out = await self.dp.predict(convert.predict_request(request), caller(context))
        return convert.predict_response(out, request.request_id)

    @mapped
    async def PredictMulti(
        self, request: pb.PredictMultiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictMultiResponse:
        out = await self.dp.predict_multi(convert.predict_multi_request(request), caller(context))
        return convert.predict_multi_response(out)

    async def PredictStream(
        self,
        request_iterator: AsyncIterator[pb.PredictRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PredictResponse]:
        """Pipelined: a reader takes messages ahead of the answers, up to STREAM_WINDOW in
        flight at once, each queued (and batched with everything else queued) as soon as it
        is read; answers go back in the order of the messages, each with its request_id. With
        the window full the reader stops reading, so gRPC flow control holds the client."""
        who = caller(context, "grpc-stream")
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

    async def _stream_one(self, request: pb.PredictRequest, who: ops.Caller) -> pb.PredictResponse:
        try:
            out = await self.dp.predict(convert.predict_request(request), who)
            return convert.predict_response(out, request.request_id)
        except Exception as exc:  # this message fails, not the whole stream
            kind, message = message_error(exc, "PredictStream")
            return pb.PredictResponse(
                request_id=request.request_id,
                error=pb.Error(code=kind.grpc_code.name, error_type=kind.error_type, message=message),
            )

    @mapped
    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        return convert.run_response(await self.dp.run(convert.run_request(request), caller(context)))

    @mapped
    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.LookupResponse:
        return convert.lookup_response(await self.dp.lookup(convert.lookup_request(request), caller(context)))

    @mapped
    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.QueryResponse:
        return convert.query_to_pb(await self.dp.query(convert.query_request(request), caller(context)))
