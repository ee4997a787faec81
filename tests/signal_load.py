"""Closed-loop clients for the SIGTERM tests (tests/node/test_shutdown.py, test_drain.py):
HTTP keep-alive (or a connection per request) and gRPC (one channel each), calling a
function endpoint `svc/e` (`sleep`) with a tag per request, and a tally of what became of
every request around the signal. With a :class:`Router` (a load balancer that takes the node
out once /ready fails), a client that may no longer open a connection to the node stops as
"moved" (it would reach another pod); without one, the node is always routable."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from typing import Protocol

import grpc
import orjson
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg


class Router(Protocol):
    routable: bool


class _Always:
    routable = True


class Tally:
    """Outcomes of one protocol's requests around a SIGTERM."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.answered: list[tuple[str, float, bool]] = []  # tag, when sent, on a new connection
        self.failed: list[str] = []  # answered with an error
        self.refused = 0  # a connection refused (or closed before sending) while the node was routable
        self.moved = 0  # stopped because the balancer had taken the node out (another pod's now)
        self.lost: list[str] = []  # sent, then the connection dropped with no answer
        # gRPC: sent after the signal and cancelled by gRPC core (a call reaching a server already
        # stopping, in the instant before the client reads the GOAWAY): it never reached the node.
        self.cancelled_after: list[str] = []
        self.signal_at = float("inf")

    def add(self, field: str, value: object = None) -> None:
        with self.lock:
            if value is None:
                setattr(self, field, getattr(self, field) + 1)
            else:
                getattr(self, field).append(value)

    def tags(self) -> list[str]:
        return [tag for tag, _, _ in self.answered]

    def after(self, t: float, new_connection: bool = False) -> int:
        return sum(1 for _, sent, new in self.answered if sent > t and (new or not new_connection))

    def figures(self) -> str:
        return (
            f"sent {self.sent}, answered {len(self.answered)}, failed {len(self.failed)}, lost {len(self.lost)}, "
            f"refused {self.refused}, moved off by the balancer {self.moved}"
            + (f", sent at GOAWAY and CANCELLED by gRPC {len(self.cancelled_after)}" if self.cancelled_after else "")
            + "".join(f"\n  lost: {x}" for x in self.lost + self.failed)
        )


def http_client(port: int, tally: Tally, name: str, *, keep_alive: bool = True, lb: Router | None = None) -> None:
    """Keep-alive: one connection until the node answers `Connection: close`. Otherwise a new
    connection per request."""
    lb = lb or _Always()
    conn: http.client.HTTPConnection | None = None
    new = False
    for i in itertools.count():
        tag = f"{name}-{i}"
        if conn is None:
            if not lb.routable:
                tally.add("moved")
                return
            conn, new = http.client.HTTPConnection("127.0.0.1", port, timeout=60), True
            try:
                conn.connect()
            except OSError:
                tally.add("refused")
                return
        sent = time.monotonic()
        headers = {"Content-Type": "application/json", **({} if keep_alive else {"Connection": "close"})}
        try:
            conn.request("POST", "/public/api/v1/svc/e/run", orjson.dumps({"s": 0.005, "tag": tag}), headers)
        except OSError:  # the node closed the connection before we could send
            tally.add("refused")
            return
        tally.add("sent")
        try:
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as exc:
            tally.add("lost", f"{tag} {exc!r}")
            return
        if r.status == 200:
            tally.add("answered", (tag, sent, new))
        else:
            tally.add("failed", f"{tag} {r.status} {data!r}")
        new = False
        if r.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = None


def grpc_client(address: str, tally: Tally, name: str, *, lb: Router | None = None) -> None:
    """One channel (connection) for the whole run, as a gRPC client behind a Service keeps."""
    lb = lb or _Always()
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = pbg.ApiNodeStub(ch)
        for i in itertools.count():
            tag = f"{name}-{i}"
            args = struct_pb2.Struct()
            args.update({"s": 0.005, "tag": tag})
            sent = time.monotonic()
            try:
                stub.Run(pb.RunRequest(service="svc", endpoint="e", arguments=args), timeout=60)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # not sent: GOAWAY, then no connection
                    tally.add("refused" if lb.routable else "moved")
                elif err.code() == grpc.StatusCode.CANCELLED and sent > tally.signal_at:
                    tally.add("sent")
                    tally.add("cancelled_after", tag)
                else:
                    tally.add("sent")
                    tally.add("lost", f"{tag} {err.code()} {err.details()}")
                return
            tally.add("sent")
            tally.add("answered", (tag, sent, False))
