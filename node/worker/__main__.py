"""Entry point of a worker process: `python -m node.worker DATA_FD CONTROL_FD [NICE [LOAD_NICE [MAX_FRAME]]]`.

The supervisor starts one of these per pool slot (spawn, never fork: a fresh
interpreter), and it runs :func:`node.worker.serve.serve`: it answers the `init` message
by loading its endpoint, then serves requests one at a time on the data channel; a thread
answers pings on the control channel. The process's stdout is redirected to stderr so a
`print` in user code cannot corrupt the channel. MAX_FRAME (tests) lowers the frame limit.

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

from node.worker import protocol as p
from node.worker.runtime import load_runtime
from node.worker.serve import serve


def main() -> int:
    data_fd, ctl_fd = int(sys.argv[1]), int(sys.argv[2])
    if len(sys.argv) > 3 and int(sys.argv[3]):
        os.nice(int(sys.argv[3]))
    extra_nice = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    max_frame = int(sys.argv[5]) if len(sys.argv) > 5 else p.MAX_FRAME
    os.dup2(2, 1)  # user prints go to the node's log, never into the channel
    data = socket.socket(fileno=data_fd)
    ctl = socket.socket(fileno=ctl_fd)
    # The front is gone: nobody to serve, and the main thread may be stuck in user code.
    return serve(
        data,
        ctl,
        load_runtime,
        extra_nice=extra_nice,
        max_frame=max_frame,
        on_front_gone=lambda: os._exit(0),
        freeze_heap=True,
    )


if __name__ == "__main__":
    sys.exit(main())
