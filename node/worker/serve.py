"""A worker's loop: load the endpoint on `init`, then answer requests one at a time.

`serve(data, ctl, load)` speaks :mod:`node.worker.protocol` on the two sockets until the
front closes the data channel. The process entry point (:mod:`node.worker.__main__`)
calls it with :func:`node.worker.runtime.load_runtime`; tests run it in a thread with a
runtime of their own, so the front's pool is exercised against the real protocol in
milliseconds.

A result that would not fit in one frame is answered with an `ERR_TOO_LARGE` error for
that request; the worker goes on serving.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from node.worker import protocol as p
from node.worker.runtime import Runtime

Loader = Callable[[Any], Runtime]  # the endpoint's spec -> its runtime


def _load(load: Loader, spec: Any, extra_nice: int) -> Runtime:
    """load(spec), in a thread niced `extra_nice` more than this one when > 0."""
    if extra_nice <= 0:
        return load(spec)
    out: dict[str, Any] = {}

    def run() -> None:
        os.nice(extra_nice)  # this thread only (Linux): the serving thread keeps its priority
        try:
            out["runtime"] = load(spec)
        except BaseException as exc:  # re-raised in the main thread, traceback intact
            out["error"] = exc

    t = threading.Thread(target=run, name="load")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["runtime"]  # type: ignore[no-any-return]


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except OSError:  # closed under us: the front is gone
            return None
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _recv(sock: socket.socket, max_frame: int) -> p.Message | None:
    """The next message, or None once the front closed the channel. A frame announced
    over the limit ends the channel too: the front never sends one."""
    head = _recv_exact(sock, p.HEADER.size)
    if head is None:
        return None
    try:
        size = p.frame_size(head, max_frame)
    except p.FrameTooLarge:
        return None
    body = _recv_exact(sock, size)
    return None if body is None else p.decode(body)


def _send(sock: socket.socket, frame: bytes) -> bool:
    """False when the front has closed the channel (it stopped us, or it is gone): then
    there is nobody to answer, which is no error worth a traceback."""
    try:
        sock.sendall(frame)
    except OSError:
        return False
    return True


def _pong_loop(ctl: socket.socket, on_front_gone: Callable[[], None]) -> None:
    while True:
        msg = _recv(ctl, p.MAX_FRAME)
        if not isinstance(msg, p.Ping) or not _send(ctl, p.encode(p.Pong(msg.sent_at))):
            on_front_gone()
            return


def _answer(runtime: Runtime, req: p.Request, max_frame: int) -> bytes:
    t0 = time.perf_counter_ns()
    try:
        result = runtime.handle(req.op, req.payload)
        reply: p.Message = p.Result(req.id, result, (time.perf_counter_ns() - t0) // 1000)
    except p.WorkerError as exc:
        reply = exc.to_message(req.id)
    except Exception as exc:  # a bug of ours, not of the user's code
        traceback.print_exc()
        reply = p.Error(req.id, p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}")
    try:
        return p.encode(reply, max_frame)
    except p.FrameTooLarge as exc:
        return p.encode(p.Error(req.id, p.ERR_TOO_LARGE, f"the worker's answer is {exc}"), max_frame)


def serve(
    data: socket.socket,
    ctl: socket.socket,
    load: Loader,
    *,
    extra_nice: int = 0,
    max_frame: int = p.MAX_FRAME,
    on_front_gone: Callable[[], None] | None = None,
    freeze_heap: bool = False,
) -> int:
    """Serves until the front closes the data channel; returns the exit code (3: the
    endpoint did not load). `on_front_gone` runs in the pong thread when the control
    channel closes (a process exits there: its main thread may be stuck in user code).
    With `freeze_heap` (a worker process, not a test's thread), what loading allocated (the
    libraries, the model, the datasets) is frozen out of the garbage collector's reach once
    loaded: a full collection then walks only what serving allocated since, not tens of
    thousands of objects (25-60 ms, a stall of the batch in flight)."""
    threading.Thread(target=_pong_loop, args=(ctl, on_front_gone or (lambda: None)), daemon=True, name="pong").start()
    first = _recv(data, max_frame)
    if not isinstance(first, p.Request):
        return 0
    assert first.op == p.OP_INIT
    try:
        runtime = _load(load, first.payload, extra_nice)
    except p.WorkerError as exc:
        _send(data, p.encode(exc.to_message(first.id)))
        return 3
    except Exception as exc:
        detail = traceback.format_exc()
        traceback.print_exc()
        _send(data, p.encode(p.Error(first.id, p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}", detail)))
        return 3
    if freeze_heap:
        gc.collect()
        gc.freeze()
    if not _send(data, p.encode(p.Result(first.id, runtime.describe(), 0))):
        return 0  # stopped while loading (shutdown, or the pool shrank)
    while True:
        msg = _recv(data, max_frame)
        if not isinstance(msg, p.Request):
            return 0
        if not _send(data, _answer(runtime, msg, max_frame)):
            return 0
