"""The standard gRPC health service (`grpc.health.v1.Health`), told by the core.

SERVING while the node is alive (node.health: no not-alive file) and ready (the data
plane's readiness: not draining, every endpoint that takes traffic has a live worker, ...),
NOT_SERVING otherwise, for the whole server ("") and for `apinode.v1.ApiNode`. `Check`
asks the core on every call, so it agrees with HTTP `/isAlive/` and `/ready` at once;
`Watch` streams follow `run()`, which asks every `interval` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

SERVICES = ("", "apinode.v1.ApiNode")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health.aio.HealthServicer):  # type: ignore[name-defined]  # `aio` is public, missing from the stubs
    def __init__(self, serving: Callable[[], bool]) -> None:
        super().__init__()
        self._serving = serving

    async def refresh(self) -> None:
        status = _SERVING if self._serving() else _NOT_SERVING
        for name in SERVICES:
            await self.set(name, status)  # ignored once in graceful shutdown (all NOT_SERVING)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def run(self, interval: float = 0.5) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
