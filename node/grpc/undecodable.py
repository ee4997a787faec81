"""Requests gRPC cannot decode are the caller's error: INVALID_ARGUMENT, never UNKNOWN.

On its own, grpc answers a message that protobuf refuses (corrupt bytes, a string that is
not UTF-8, nesting past protobuf's depth limit) with UNKNOWN "Unexpected DecodeError",
as if the node had failed. :class:`RefuseUndecodable` wraps the deserializer of every
`apinode.v1` method so that such a message becomes an :class:`Undecodable` marker, and
the method's behaviour so that the marker ends the call with INVALID_ARGUMENT before any
servicer sees it. Wrapped handlers are built once per method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from node import errors

_PREFIX = "/apinode.v1."


class Undecodable:
    def __init__(self, message: str) -> None:
        self.message = message


def _deserializer(decode: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # DecodeError, and whatever else protobuf raises on garbage
            return Undecodable(f"{method}: the request cannot be decoded: {exc}")

    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise errors.BadRequest(request.message)
        yield request


def _wrap(handler: Any, method: str) -> Any:
    kw: dict[str, Any] = {"request_deserializer": _deserializer(handler.request_deserializer, method)}
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await unary(request, context)

        kw["unary_unary"] = unary_unary
    elif handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def stream_unary_(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await stream_unary(_checked(requests), context)
            except errors.BadRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

        kw["stream_unary"] = stream_unary_
    elif handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        async def stream_stream_(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in stream_stream(_checked(requests), context):
                    yield response
            except errors.BadRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

        kw["stream_stream"] = stream_stream_
    else:
        return handler  # unary-stream: apinode has none
    return handler._replace(**kw)


class RefuseUndecodable(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_deserializer is None or not method.startswith(_PREFIX):
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, _wrap(handler, method[1:]))
        return cached[1]
