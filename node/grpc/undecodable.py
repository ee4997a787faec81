"""Requests gRPC cannot decode are the caller's error (a BadRequest: INVALID_ARGUMENT by the
error table of node.errors), never UNKNOWN.

On its own, grpc answers a message that protobuf refuses (corrupt bytes, a string that is
not UTF-8, nesting past protobuf's depth limit) with UNKNOWN "Unexpected DecodeError",
as if the node had failed. apinode wraps the deserializer of every
method registered through :func:`register_servicers` so that such a message becomes
an :class:`Undecodable` error, and the method's behaviour so that it ends the call with the
status the error table gives a bad request, before any servicer sees it. Handlers are wrapped once, when they are
registered. The node registers every servicer (its own, OIP, health, reflection) in one
call of :func:`register_servicers`: a servicer added beside it would lose the guard, as
the OIP service once did.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from node import errors


class Undecodable(errors.BadRequest):
    """A request message protobuf refused: stands in for the message, and is raised (from
    the requests of a streaming call) to end the call with the error table's status."""


def _deserializer(decode: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:  # DecodeError, and whatever else protobuf raises on garbage
            return Undecodable(f"{method}: the request cannot be decoded: {exc}")

    return deserialize


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], exc: errors.ApiNodeError) -> None:
    await context.abort(errors.kind_of(exc).grpc_code, exc.message)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request
        yield request


def _wrap(handler: Any, method: str) -> Any:
    kw: dict[str, Any] = {"request_deserializer": _deserializer(handler.request_deserializer, method)}
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            return await unary(request, context)

        kw["unary_unary"] = unary_unary
    elif handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def stream_unary_(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await stream_unary(_checked(requests), context)
            except errors.BadRequest as exc:  # the requests' (or the servicer's, if it leaves it)
                await _refuse(context, exc)

        kw["stream_unary"] = stream_unary_
    elif handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        async def stream_stream_(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for response in stream_stream(_checked(requests), context):
                    yield response
            except errors.BadRequest as exc:  # the requests' (or the servicer's, if it leaves it)
                await _refuse(context, exc)

        kw["stream_stream"] = stream_stream_
    elif handler.unary_stream is not None:  # grpc.health.v1.Health/Watch
        unary_stream = handler.unary_stream
        if inspect.isasyncgenfunction(unary_stream):

            async def unary_stream_gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                if isinstance(request, Undecodable):
                    await _refuse(context, request)
                async for response in unary_stream(request, context):
                    yield response

            kw["unary_stream"] = unary_stream_gen
        else:  # writes with context.write: grpc refuses a generator around it

            async def unary_stream_(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                if isinstance(request, Undecodable):
                    await _refuse(context, request)
                await unary_stream(request, context)

            kw["unary_stream"] = unary_stream_
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


Adder = Callable[[Any, Any], None]  # a generated `add_*Servicer_to_server`


def register_servicers(server: grpc.aio.Server, servicers: Sequence[tuple[Adder, Any]]) -> None:
    """`add(servicer, server)` for each pair, with every method's undecodable requests
    refused as INVALID_ARGUMENT. The one way the node registers a servicer."""
    registering = _Registering(server)
    for add, servicer in servicers:
        add(servicer, registering)
