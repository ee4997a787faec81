"""SIGTERM: stop accepting, finish in-flight and queued requests, stop workers, exit 0 (README, Operations)."""

from __future__ import annotations

import http.client
import itertools
import signal
import threading
import time
from pathlib import Path

import grpc
import orjson
import requests
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import start_node
from tests.packages import function_package


def test_sigterm_during_load_answers_every_accepted_request(tmp_path: Path) -> None:
    pool = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 50}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool}})
    node = start_node(tmp_path / "data", pkg)
    results: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        r = requests.post(node.url("svc", "e", "run"), json={"s": 0.5, "tag": i}, timeout=30)
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    node.wait_for(lambda: node.pool("svc", "e")["queueDepth"] >= 6, what="a queue")
    worker_pids = node.pool("svc", "e")["workers"]["pids"]
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert results == [200] * 10  # 2 running + 8 queued, all answered
    assert node.proc.wait(30) == 0
    assert time.monotonic() - t0 < 10
    for pid in worker_pids:  # no orphaned workers
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


class Tally:
    """Outcomes of one protocol's requests around a SIGTERM."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.answered: list[str] = []  # tags answered 200 / OK
        self.failed: list[str] = []  # answered with an error
        self.refused = 0  # a connection error before the request was sent
        self.lost: list[str] = []  # sent, then the connection dropped with no answer
        self.cancelled_after: list[str] = []  # gRPC: sent after the signal, cancelled by gRPC before our code saw it
        self.signal_at = float("inf")

    def add(self, field: str, value: str | None = None) -> None:
        with self.lock:
            if value is None:
                setattr(self, field, getattr(self, field) + 1)
            else:
                getattr(self, field).append(value)

    def figures(self) -> str:
        return (
            f"sent {self.sent}, answered {len(self.answered)}, failed {len(self.failed)}, "
            f"lost {len(self.lost)}; refused before sending {self.refused}"
            + (
                f"; sent after the signal and CANCELLED by gRPC {len(self.cancelled_after)}"
                if self.cancelled_after
                else ""
            )
            + "".join(f"\n  lost: {x}" for x in self.lost)
        )


def _http_client(port: int, tally: Tally, name: str) -> None:
    """A keep-alive client: one connection reused until the node says `Connection: close`."""
    conn: http.client.HTTPConnection | None = None
    for i in itertools.count():
        tag = f"{name}-{i}"
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.connect()
            except OSError:
                tally.add("refused")
                return
        body = orjson.dumps({"s": 0.005, "tag": tag})
        try:
            conn.request("POST", "/public/api/v1/svc/e/run", body, {"Content-Type": "application/json"})
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
        tally.add("answered" if r.status == 200 else "failed", tag if r.status == 200 else f"{tag} {r.status} {data!r}")
        if r.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = None


def _grpc_client(address: str, tally: Tally, name: str) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
    with grpc.insecure_channel(address, options=options) as ch:
        stub = pbg.ApiNodeStub(ch)
        for i in itertools.count():
            tag = f"{name}-{i}"
            args = struct_pb2.Struct()
            args.update({"s": 0.005, "tag": tag})
            started = time.monotonic()
            try:
                stub.Run(pb.RunRequest(service="svc", endpoint="e", arguments=args), timeout=60)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # not processed: no connection, or GOAWAY
                    tally.add("refused")
                elif err.code() == grpc.StatusCode.CANCELLED and started > tally.signal_at:
                    # gRPC core cancels a call that reaches a server already stopping (in the
                    # instant before the client reads the GOAWAY): it never reaches the node.
                    tally.add("sent")
                    tally.add("cancelled_after", tag)
                else:
                    tally.add("sent")
                    tally.add("lost", f"{tag} {err.code()} {err.details()}")
                return
            tally.add("sent")
            tally.add("answered", tag)


def test_sigterm_under_keepalive_load_answers_every_request_that_arrived(tmp_path: Path) -> None:
    pool = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 500}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool}})
    logdir = tmp_path / "qlog"
    node = start_node(tmp_path / "data", pkg, args=["--query-log", str(logdir)])
    web, rpc = Tally(), Tally()
    threads = [threading.Thread(target=_http_client, args=(node.http_port, web, f"h{i}")) for i in range(6)]
    threads += [threading.Thread(target=_grpc_client, args=(node.grpc, rpc, f"g{i}")) for i in range(6)]
    for t in threads:
        t.start()
    node.wait_for(lambda: len(web.answered) >= 100 and len(rpc.answered) >= 100, what="load", timeout=60)
    web.signal_at = rpc.signal_at = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(90)
    assert node.proc.wait(60) == 0
    print(f"\nSIGTERM under keep-alive load: HTTP {web.figures()}; gRPC {rpc.figures()}")
    assert not any(t.is_alive() for t in threads)
    assert (web.lost, web.failed, rpc.lost, rpc.failed) == ([], [], [], [])
    assert web.refused == 6  # each client stopped on a refusal, never a drop
    assert rpc.refused + len(rpc.cancelled_after) == 6
    logged = set()
    for line in (logdir / "queries.jsonl").read_bytes().splitlines():
        logged.add(orjson.loads(line)["arguments"]["tag"])
    assert set(web.answered) | set(rpc.answered) <= logged
    assert not set(rpc.cancelled_after) & logged  # never run: not a request the node dropped
