"""The gRPC transports: unary calls (Predict, PredictMulti, Run) and PredictStream.

Requests are serialized once (see :mod:`loadtest.grpc_messages`) and sent as bytes over
multicallables built from the proto's method names; unary answers are not even parsed,
since their status is all a load test needs. Several channels, when asked, each get their
own TCP connection (a local subchannel pool), and slots are spread over them.

PredictStream: one bidirectional stream per slot of the pool. A writer task per stream
sends queued messages in order; a reader task matches each response to the oldest
pending request (the node answers in order and echoes ``request_id``, which is checked).
A response with ``error`` set counts as an error under its code; a stream that breaks
fails its pending requests with the stream's status and is reopened on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from loadtest.config import Target
from loadtest.grpc_messages import encode_bodies, method_path, rpc_of
from node._proto.apinode.v1 import apinode_pb2 as pb

_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


def _channels(address: str, n: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(address, options=_OPTIONS) for _ in range(n)]


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {api_key}"),) if api_key else None


def status_key(code: grpc.StatusCode | None) -> str:
    return f"grpc {code.name if code is not None else 'UNKNOWN'}"


class GrpcUnaryTransport:
    """Unary calls of ``target.verb`` over ``channels`` channels; implements Transport."""

    def __init__(self, target: Target, bodies: Sequence[Any], *, channels: int, timeout: float) -> None:
        self._bodies = encode_bodies(target, bodies)
        path = method_path(rpc_of(target.verb))
        self._channels = _channels(target.grpc, channels)
        # No serializers: the requests are bytes already, and the answer's bytes go unread.
        self._calls = [
            ch.unary_unary(path, request_serializer=None, response_deserializer=None) for ch in self._channels
        ]
        self._metadata = _metadata(target.api_key)
        self._timeout = timeout

    async def call(self, slot: int, index: int) -> str | None:
        try:
            await self._calls[slot % len(self._calls)](
                self._bodies[index], timeout=self._timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            return status_key(exc.code())
        return None

    async def aclose(self) -> None:
        for ch in self._channels:
            await ch.close(grace=None)


class _Stream:
    """One PredictStream call with its writer and reader tasks."""

    def __init__(self, open_call: Any, metadata: tuple[tuple[str, str], ...] | None) -> None:
        self._call = open_call(metadata=metadata)
        self._pending: deque[tuple[asyncio.Future[str | None], str]] = deque()
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write())
        self._reader = loop.create_task(self._read())

    async def request(self, data: bytes, rid: str, timeout: float) -> str | None:
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending.append((fut, rid))
        self._outbox.put_nowait(data)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return "timeout"

    async def _write(self) -> None:
        try:
            while (data := await self._outbox.get()) is not None:
                await self._call.write(data)
            await self._call.done_writing()
        except grpc.aio.AioRpcError as exc:
            self._fail(status_key(exc.code()))
        except Exception:  # the call ended under us: the reader reports its status
            self.closed = True

    async def _read(self) -> None:
        key = "grpc stream closed"
        try:
            while (resp := await self._call.read()) is not _EOF:
                if not self._pending:
                    key = "grpc stream unmatched response"
                    break
                fut, rid = self._pending.popleft()
                if fut.done():  # timed out already
                    continue
                if resp.HasField("error"):
                    fut.set_result(f"grpc {resp.error.code or 'UNKNOWN'}")
                elif resp.request_id and resp.request_id != rid:
                    fut.set_result("grpc stream out of order")
                else:
                    fut.set_result(None)
        except grpc.aio.AioRpcError as exc:
            key = status_key(exc.code())
        finally:
            self._fail(key)

    def _fail(self, key: str) -> None:
        self.closed = True
        while self._pending:
            fut, _ = self._pending.popleft()
            if not fut.done():
                fut.set_result(key)
        self._outbox.put_nowait(None)  # lets the writer finish
        self._call.cancel()

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
        for task in (self._writer, self._reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._call.cancel()


class GrpcStreamTransport:
    """``streams`` PredictStream calls spread over ``channels``; implements Transport."""

    def __init__(
        self,
        target: Target,
        bodies: Sequence[Any],
        *,
        streams: int,
        channels: int,
        timeout: float,
    ) -> None:
        self._bodies = encode_bodies(target, bodies, stream=True)
        self._rids = [str(i) for i in range(len(self._bodies))]
        path = method_path("PredictStream")
        self._channels = _channels(target.grpc, channels)
        self._open = [
            ch.stream_stream(
                path,
                request_serializer=None,
                response_deserializer=pb.PredictResponse.FromString,
            )
            for ch in self._channels
        ]
        self._streams: list[_Stream | None] = [None] * streams
        self._metadata = _metadata(target.api_key)
        self._timeout = timeout

    async def call(self, slot: int, index: int) -> str | None:
        i = slot % len(self._streams)
        stream = self._streams[i]
        if stream is None or stream.closed:
            stream = self._streams[i] = _Stream(self._open[i % len(self._open)], self._metadata)
        return await stream.request(self._bodies[index], self._rids[index], self._timeout)

    async def aclose(self) -> None:
        for stream in self._streams:
            if stream is not None:
                await stream.close()
        for ch in self._channels:
            await ch.close(grace=None)
