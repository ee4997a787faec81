"""Entry point of a worker process: `python -m node.worker DATA_FD CONTROL_FD [NICE [LOAD_NICE]]`.

The supervisor starts one of these per pool slot (spawn, never fork: a fresh
interpreter). It answers the `init` message by loading its endpoint, then serves requests
one at a time on the data channel; a thread answers pings on the control channel. The
process's stdout is redirected to stderr so a `print` in user code cannot corrupt the
channel.

A worker lowers its own priority by NICE (`apinode serve --worker-nice`, default 10). The
front answers every endpoint from one event loop (accepting and decoding requests,
queueing, rejecting past the queue, encoding answers); when it and a worker want the same
CPU, the front going first keeps overload answered fast, and the requests that arrive
while the worker waits for the CPU join its next batch. On an idle core a niced worker
runs at full speed.

A worker of a generation loading beside one that serves (a push, a switch) loads its
endpoint in a thread niced LOAD_NICE more: on a busy CPU the serving workers go first. Nice
values are per thread on Linux, and an unprivileged process cannot lower one again, so the
loading thread is the one that pays; the worker then serves from its main thread at NICE.
Threads started while loading (ONNX intra-op threads with `--onnx-threads` > 1, threads of
user code) keep the loading priority.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from typing import Any

from node.worker import protocol as p
from node.worker.runtime import Runtime, RuntimeError_, load_runtime


def _load(spec: Any, extra_nice: int) -> Runtime:
    """load_runtime(spec), in a thread niced `extra_nice` more than this one when > 0."""
    if extra_nice <= 0:
        return load_runtime(spec)
    out: dict[str, Any] = {}

    def run() -> None:
        os.nice(extra_nice)  # this thread only (Linux): the serving thread keeps its priority
        try:
            out["runtime"] = load_runtime(spec)
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
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> Any | None:
    head = _recv_exact(sock, p.HEADER.size)
    if head is None:
        return None
    (size,) = p.HEADER.unpack(head)
    body = _recv_exact(sock, size)
    return None if body is None else p.decode(body)


def _send(sock: socket.socket, msg: Any) -> bool:
    """False when the front has closed the channel (it stopped us, or it is gone): then
    there is nobody to answer, which is no error worth a traceback."""
    try:
        sock.sendall(p.encode(msg))
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _pong_loop(ctl: socket.socket) -> None:
    while True:
        msg = _recv(ctl)
        if msg is None or not _send(ctl, ("pong", msg[1])):
            os._exit(0)  # the front is gone: nobody to serve


def _serve(data: socket.socket, runtime: Runtime) -> None:
    while True:
        msg = _recv(data)
        if msg is None:
            return
        mid, op, payload = msg
        t0 = time.perf_counter_ns()
        try:
            result = runtime.handle(op, payload)
            reply: Any = (mid, True, (result, (time.perf_counter_ns() - t0) // 1000))
        except RuntimeError_ as exc:
            reply = (mid, False, (exc.kind, exc.message, exc.detail))
        except Exception as exc:  # a bug of ours, not of the user's code
            traceback.print_exc()
            reply = (mid, False, (p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}", None))
        if not _send(data, reply):
            return


def main() -> int:
    data_fd, ctl_fd = int(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3 and int(sys.argv[3]):
        os.nice(int(sys.argv[3]))
    extra_nice = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    os.dup2(2, 1)  # user prints go to the node's log, never into the channel
    data = socket.socket(fileno=data_fd)
    ctl = socket.socket(fileno=ctl_fd)
    threading.Thread(target=_pong_loop, args=(ctl,), daemon=True, name="pong").start()
    first = _recv(data)
    if first is None:
        return 0
    mid, op, spec = first
    assert op == p.OP_INIT
    try:
        runtime = _load(spec, extra_nice)
    except RuntimeError_ as exc:
        _send(data, (mid, False, (exc.kind, exc.message, exc.detail)))
        return 3
    except Exception as exc:
        detail = traceback.format_exc()
        sys.stderr.write(detail)
        _send(data, (mid, False, (p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}", detail)))
        return 3
    if not _send(data, (mid, True, (runtime.describe(), 0))):
        return 0  # stopped while loading (shutdown, or the pool shrank)
    _serve(data, runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
