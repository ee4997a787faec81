"""Requests gRPC cannot decode are the caller's error: INVALID_ARGUMENT, never UNKNOWN.

On its own, grpc answers a message that protobuf refuses (corrupt bytes, a string that is
not UTF-8, nesting past protobuf's depth limit) with UNKNOWN "Unexpected DecodeError",
as if the node had failed. apinode wraps the deserializer of every
method registered through :func:`add_refusing_undecodable` so that such a message becomes
an :class:`Undecodable` marker, and the method's behaviour so that the marker ends the call
with INVALID_ARGUMENT before any servicer sees it. Handlers are wrapped once, when they are
registered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from node import errors


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


class _Registering:
    """Stands in for the server while a generated `add_*Servicer_to_server` registers its
    handlers, and wraps each of them once, then. (An interceptor would do the same per
    call, at the price of one more coroutine on every call's path.)"""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {name: _wrap(h, f"{service}/{name}") for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any]) -> None:
        self._inner = inner
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, _wrap(handler, method[1:]))
        return cached[1]


def add_refusing_undecodable(add: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
    """`add(servicer, server)` (a generated `add_*Servicer_to_server`) with every method's
    undecodable requests refused as INVALID_ARGUMENT."""
    add(servicer, _Registering(server))
