"""Small real servers with known behaviour, to measure the load generator against.

They stand in for the node: the Dataiku predict route over aiohttp, and the generated
``ApiNodeServicer`` (Predict, PredictStream) over grpc.aio, both on 127.0.0.1 port 0.
A :class:`Behaviour` says how long an answer takes, which requests fail, whether the
server stalls, and which API key it wants; the servers count what they saw.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg


@dataclass
class Behaviour:
    delay: float = 0.0  # seconds before each answer
    fail_every: int = 0  # every n-th request fails (503 / RESOURCE_EXHAUSTED)
    stall: float = 0.0  # from the first request, everything waits this long
    delay_per_inflight: float = 0.0  # extra delay per request in flight
    burn: float = 0.0  # seconds of CPU spent on the event loop per request
    api_key: str | None = None
    seen: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (host, port): one per connection
    inflight: int = 0
    bodies: list[Any] = field(default_factory=list)
    _stall_until: float | None = None

    async def serve(self) -> bool:
        """Waits as configured; False when this request is one that fails."""
        self.seen += 1
        n = self.seen
        now = time.monotonic()
        cpu = time.thread_time()
        while self.burn and time.thread_time() - cpu < self.burn:
            pass
        if self.stall and self._stall_until is None:
            self._stall_until = now + self.stall
        self.inflight += 1
        try:
            if self._stall_until is not None and now < self._stall_until:
                await asyncio.sleep(self._stall_until - now)
            delay = self.delay + self.delay_per_inflight * (self.inflight - 1)
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.inflight -= 1
        return not (self.fail_every and n % self.fail_every == 0)


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@asynccontextmanager
async def http_server(b: Behaviour) -> AsyncIterator[str]:
    """Serves ``POST /public/api/v1/{service}/{endpoint}/predict`` and ``/echo`` (as
    :class:`Behaviour` says), ``/chunked`` and ``/close`` (framing cases); yields the base URL."""

    async def predict(request: web.Request) -> web.Response:
        if request.transport is not None:
            b.peers.add(request.transport.get_extra_info("peername")[:2])
        if b.api_key and request.headers.get("Authorization") != _basic(b.api_key):
            return web.json_response({"errorType": "UNAUTHORIZED", "message": "key"}, status=401)
        body = await request.json()
        if len(b.bodies) < 1000:
            b.bodies.append(body)
        if not await b.serve():
            return web.json_response({"errorType": "OVERLOADED", "message": "busy"}, status=503)
        return web.json_response(
            {
                "result": {"prediction": 1, "ignored": False},
                "timing": {},
                "apiContext": {
                    "serviceId": request.match_info.get("service", ""),
                    "endpointId": request.match_info.get("endpoint", ""),
                    "serviceGeneration": "v1",
                },
            }
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        """The answer in chunked framing, with a trailer-less end."""
        await request.read()
        b.seen += 1
        resp = web.StreamResponse(status=200)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"result":', b' {"prediction": 1},', b' "x": "' + b"y" * 5000 + b'"}'):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def close(request: web.Request) -> web.Response:
        """Answers, then closes the connection (``Connection: close``)."""
        await request.read()
        b.seen += 1
        if request.transport is not None:
            b.peers.add(request.transport.get_extra_info("peername")[:2])
        resp = web.json_response({"result": {}}, headers={"Connection": "close"})
        resp.force_close()
        return resp

    app = web.Application()
    app.router.add_post("/public/api/v1/{service}/{endpoint}/predict", predict)
    app.router.add_post("/echo", predict)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/close", close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class _Servicer(pbg.ApiNodeServicer):  # type: ignore[misc]
    def __init__(self, b: Behaviour) -> None:
        self.b = b

    def _authorized(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        if not self.b.api_key:
            return True
        md = dict(context.invocation_metadata() or ())
        return md.get("authorization") == f"Bearer {self.b.api_key}"

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad key")
        if len(self.b.bodies) < 1000:
            self.b.bodies.append(request)
        if not await self.b.serve():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        return pb.PredictResponse(result=pb.Prediction(prediction=pb.Value(integer=1)), request_id=request.request_id)

    async def PredictStream(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.PredictResponse]:
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad key")
        async for request in request_iterator:
            if len(self.b.bodies) < 1000:
                self.b.bodies.append(request)
            if await self.b.serve():
                yield pb.PredictResponse(
                    result=pb.Prediction(prediction=pb.Value(integer=1)),
                    request_id=request.request_id,
                )
            else:
                yield pb.PredictResponse(
                    request_id=request.request_id,
                    error=pb.Error(code="RESOURCE_EXHAUSTED", error_type="OVERLOADED"),
                )


@asynccontextmanager
async def grpc_server(b: Behaviour) -> AsyncIterator[str]:
    """Serves ApiNode (Predict, PredictStream); yields ``host:port``."""
    server = grpc.aio.server()
    pbg.add_ApiNodeServicer_to_server(_Servicer(b), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
