"""A worker process freezes what loading allocated out of the garbage collector's reach (a
full collection then walks only what serving allocated since: no 25-60 ms stall of the batch
in flight). Run in a fresh interpreter each, since gc.freeze acts on the whole process."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import gc, socket, sys, threading
from node.worker import protocol as p
from node.worker.serve import serve

class Runtime:
    def __init__(self):
        self.loaded = [{"row": i} for i in range(20_000)]  # what a model load leaves behind
    def describe(self):
        return {}
    def handle(self, op, payload):
        return gc.get_freeze_count()

front, worker = socket.socketpair()
ctl_front, ctl_worker = socket.socketpair()
freeze = sys.argv[1] == "1"
threading.Thread(target=serve, args=(worker, ctl_worker, lambda spec: Runtime()), kwargs={"freeze_heap": freeze}, daemon=True).start()

def ask(msg):
    front.sendall(p.encode(msg))
    head = b""
    while len(head) < p.HEADER.size:
        head += front.recv(p.HEADER.size - len(head))
    size, body = p.frame_size(head), b""
    while len(body) < size:
        body += front.recv(size - len(body))
    return p.decode(body)

ask(p.Request(1, p.OP_INIT, None))
print(ask(p.Request(2, p.OP_PREDICT, None)).payload)
"""


def _frozen(freeze: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "1" if freeze else "0"], capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_a_worker_process_freezes_its_loaded_heap() -> None:
    assert _frozen(False) == 0
    assert _frozen(True) > 20_000  # the runtime's rows and the interpreter's modules
