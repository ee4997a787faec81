"""The HTTP listener (node/http/listen.py) accepts a burst of connections in one wake-up,
where libuv (uvloop's servers) accepts one per event loop iteration: on a busy front,
whose iterations are long, that left connections and their requests in the kernel's
accept queue for seconds."""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop

from node.http.listen import Listener

BURST = 200


class Counting(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made += 1


def test_a_burst_of_connections_is_accepted_within_a_few_busy_iterations() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        Counting.made = 0
        listener = Listener.open("127.0.0.1", 0, backlog=1024, factory=Counting)
        port = listener.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]  # queued by the kernel
        iterations = 0
        done = asyncio.Event()

        def busy() -> None:  # one callback per iteration, each as long as a loaded front's
            nonlocal iterations
            iterations += 1
            time.sleep(0.01)
            if iterations < 5:
                loop.call_soon(busy)
            else:
                done.set()

        loop.call_soon(busy)
        await done.wait()
        await asyncio.sleep(0)  # the connections' set-up tasks
        await asyncio.sleep(0)
        made = Counting.made
        listener.close()
        for c in clients:
            c.close()
        return made, iterations

    made, iterations = uvloop.run(main())
    assert iterations == 5
    assert made == BURST, f"{made} of {BURST} connections accepted in {iterations} busy iterations"


def test_a_closed_listener_refuses_new_connections() -> None:
    async def main() -> None:
        listener = Listener.open("127.0.0.1", 0, backlog=16, factory=Counting)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return
        raise AssertionError("a closed listener still took a connection")

    uvloop.run(main())
