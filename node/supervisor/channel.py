"""The front's end of a worker channel: frames in and out on an asyncio transport.

A socketpair carries :mod:`node.worker.protocol` frames. `Channel` splits the incoming
byte stream into messages for its owner (the :class:`~node.supervisor.process.WorkerProcess`)
and writes outgoing ones whole or not at all: a message over the frame limit raises
:class:`~node.worker.protocol.FrameTooLarge` before anything is written, and an incoming
frame announced over the limit is reported to `on_bad_frame` (the worker is broken) and
nothing more is read from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from node.worker import protocol as p


class Channel(asyncio.Protocol):
    def __init__(
        self,
        on_message: Callable[[p.Message], None],
        *,
        max_frame: int = p.MAX_FRAME,
        on_lost: Callable[[], None] | None = None,
        on_bad_frame: Callable[[p.FrameTooLarge], None] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_bad_frame = on_bad_frame
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self._broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost()

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        buf = self._buf
        buf += data
        hs = p.HEADER.size
        while len(buf) >= hs:
            try:
                size = p.frame_size(buf, self.max_frame)
            except p.FrameTooLarge as exc:
                self._broken = True
                buf.clear()
                if self._on_bad_frame is not None:
                    self._on_bad_frame(exc)
                return
            if len(buf) < hs + size:
                break
            msg = p.decode(bytes(buf[hs : hs + size]))
            del buf[: hs + size]
            self._on_message(msg)

    def send(self, msg: p.Message) -> None:
        """Raises FrameTooLarge (nothing written) or the transport's error once closed."""
        frame = p.encode(msg, self.max_frame)
        assert self.transport is not None
        self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
