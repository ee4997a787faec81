"""The one interface the load loops drive, and the factory that picks an implementation.

A transport owns its connections and the bodies, already encoded for the wire. The loops
only say *which* body (an index) on *which* slot (a closed-loop client, or the sequence
number of an open-loop request; a transport with several streams or channels spreads
slots over them) and time the call. A call never raises: it returns ``None`` for a served
answer, or an error key such as ``"http 503"``, ``"grpc RESOURCE_EXHAUSTED"``,
``"timeout"`` or ``"conn ConnectionRefusedError"`` under which the error is counted.

The HTTP and gRPC implementations are imported only when used, so that loading the CLI
(``apinode --help``) stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from loadtest.config import LoadConfig


class Transport(Protocol):
    async def call(self, slot: int, index: int) -> str | None:
        """Sends body ``index`` and waits for its answer: None if served, else an error key."""
        ...

    async def aclose(self) -> None: ...


def connections_for(config: LoadConfig) -> int:
    """The pool size (HTTP connections, or gRPC streams) the config asks for."""
    if config.connections is not None:
        return config.connections
    if not config.open_loop:
        return config.concurrency
    return config.max_inflight if config.target.mode == "http" else config.channels


async def open_transport(config: LoadConfig, bodies: Sequence[Any], *, concurrency: int | None = None) -> Transport:
    """Builds the transport of ``config.target.mode`` (in the running event loop).

    ``concurrency`` overrides the closed-loop client count, for a process running a share
    of a multi-process run.
    """
    if concurrency is not None and config.connections is None and not config.open_loop:
        pool = concurrency
    else:
        pool = connections_for(config)
    mode = config.target.mode
    if mode == "http" and config.http_client == "aiohttp":
        from loadtest.http_client import HttpTransport

        return HttpTransport(config.target, bodies, connections=pool, timeout=config.timeout)
    if mode == "http":
        from loadtest.fast_http import FastHttpTransport

        return FastHttpTransport(config.target, bodies, connections=pool, timeout=config.timeout)
    if mode == "grpc":
        from loadtest.grpc_client import GrpcUnaryTransport

        return GrpcUnaryTransport(config.target, bodies, channels=config.channels, timeout=config.timeout)
    from loadtest.grpc_client import GrpcStreamTransport

    return GrpcStreamTransport(config.target, bodies, streams=pool, channels=config.channels, timeout=config.timeout)


def error_key(kind: str, exc: BaseException) -> str:
    """``"conn ServerDisconnectedError"``: an exception class as an error key."""
    return f"{kind} {type(exc).__name__}"
