"""SIGTERM with `--drain-seconds`: readiness off at once, serving on (new connections too) until a
load balancer has taken the node out, then the usual shutdown; nothing lost (README, Shutdown)."""

from __future__ import annotations

import http.client
import itertools
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import orjson
import requests
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Triton's OIP stubs: a client's view (node._proto.inference keeps its own descriptor pool, so both load)
from tritonclient.grpc import service_pb2 as oip
from tritonclient.grpc import service_pb2_grpc as oipg

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import APINODE, NodeProc, start_node
from tests.packages import function_package

PROPAGATION_S = 0.5  # how long the balancer takes to act on a failed readiness probe


class Balancer:
    """Kubernetes in miniature: probes `/ready` (a new connection each time) and, a little after
    the first failure, takes the node out of the endpoints: clients then open no new connection
    to it (they would reach another pod). Connections already open are untouched, as with
    kube-proxy."""

    def __init__(self, node: NodeProc) -> None:
        self.node = node
        self.routable = True
        self.not_ready_at: float | None = None
        self.probes: list[str] = []  # "200", "503", then "refused" once the listener closed
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while self.node.proc.poll() is None:
            try:
                status = str(requests.get(self.node.http + "/ready", timeout=30).status_code)
            except requests.ConnectionError:
                status = "refused"
            self.probes.append(status)
            if status != "200" and self.not_ready_at is None:
                self.not_ready_at = time.monotonic()
                threading.Timer(PROPAGATION_S, setattr, (self, "routable", False)).start()
            if status == "refused":
                return
            time.sleep(0.02)


class Tally:
    """Outcomes of one protocol's requests around the SIGTERM."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.answered: list[tuple[str, float, bool]] = []  # tag, when sent, on a new connection
        self.failed: list[str] = []  # answered with an error
        self.refused = 0  # a connection refused while the balancer still routed to the node
        self.moved = 0  # stopped because the balancer had taken the node out (another pod's now)
        self.lost: list[str] = []  # sent, then the connection dropped with no answer
        self.cancelled_after: list[str] = []  # gRPC: cancelled by gRPC at GOAWAY, never reached the node
        self.signal_at = float("inf")

    def add(self, field: str, value: object = None) -> None:
        with self.lock:
            if value is None:
                setattr(self, field, getattr(self, field) + 1)
            else:
                getattr(self, field).append(value)

    def after(self, t: float, new_connection: bool = False) -> int:
        return sum(1 for _, sent, new in self.answered if sent > t and (new or not new_connection))

    def figures(self) -> str:
        return (
            f"sent {self.sent}, answered {len(self.answered)}, failed {len(self.failed)}, lost {len(self.lost)}, "
            f"refused {self.refused}, moved off by the balancer {self.moved}"
            + (f", sent at GOAWAY and CANCELLED by gRPC {len(self.cancelled_after)}" if self.cancelled_after else "")
            + "".join(f"\n  lost: {x}" for x in self.lost + self.failed)
        )


def _http_client(port: int, lb: Balancer, tally: Tally, name: str, keep_alive: bool) -> None:
    """Keep-alive: one connection until the node answers `Connection: close`. Otherwise a new
    connection per request."""
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
        except OSError:
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


def _grpc_client(address: str, lb: Balancer, tally: Tally, name: str) -> None:
    """One channel (connection) for the whole run, as a gRPC client behind a Service keeps."""
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
                    tally.add("sent")  # see tests/node/test_shutdown.py: gRPC's own, at GOAWAY
                    tally.add("cancelled_after", tag)
                else:
                    tally.add("sent")
                    tally.add("lost", f"{tag} {err.code()} {err.details()}")
                return
            tally.add("sent")
            tally.add("answered", (tag, sent, False))


def _probe_during_drain(node: NodeProc) -> dict[str, object]:
    """What the health endpoints answer, and whether new connections are served."""
    out: dict[str, object] = {
        "isAlive": requests.get(node.http + "/isAlive/", timeout=30).status_code,
        "oip ready": requests.get(node.http + "/v2/health/ready", timeout=30).status_code,
        "oip live": requests.get(node.http + "/v2/health/live", timeout=30).status_code,
        "http run": requests.post(node.url("svc", "e", "run"), json={"tag": "probe-http"}, timeout=30).status_code,
    }
    with grpc.insecure_channel(node.grpc, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        out["grpc health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        out["oip ServerReady"] = (
            oipg.GRPCInferenceServiceStub(ch).ServerReady(oip.ServerReadyRequest(), timeout=30).ready
        )
        args = struct_pb2.Struct()
        args.update({"tag": "probe-grpc"})
        pbg.ApiNodeStub(ch).Run(pb.RunRequest(service="svc", endpoint="e", arguments=args), timeout=30)
        out["grpc run"] = "OK"
    return out


def test_sigterm_drains_then_stops_losing_nothing(tmp_path: Path) -> None:
    pool = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 500}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool}})
    logdir = tmp_path / "qlog"
    node = start_node(tmp_path / "data", pkg, args=["--query-log", str(logdir), "--drain-seconds", "2"])
    lb = Balancer(node)
    web, rpc = Tally(), Tally()
    threads = [threading.Thread(target=_http_client, args=(node.http_port, lb, web, f"h{i}", i < 4)) for i in range(6)]
    threads += [threading.Thread(target=_grpc_client, args=(node.grpc, lb, rpc, f"g{i}")) for i in range(4)]
    for t in threads:
        t.start()
    node.wait_for(lambda: len(web.answered) >= 50 and len(rpc.answered) >= 50, what="load", timeout=60)
    web.signal_at = rpc.signal_at = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    node.wait_for(lambda: lb.not_ready_at is not None, what="/ready to fail", timeout=30)
    probes = _probe_during_drain(node)
    for t in [*threads, lb.thread]:
        t.join(90)
    assert node.proc.wait(60) == 0
    assert lb.not_ready_at is not None
    print(
        f"\nSIGTERM with --drain-seconds 2 under load: HTTP {web.figures()}; gRPC {rpc.figures()}"
        f"\n  answered after /ready failed: HTTP {web.after(lb.not_ready_at)} "
        f"({web.after(lb.not_ready_at, new_connection=True)} on new connections), gRPC {rpc.after(lb.not_ready_at)}"
        f"\n  /ready probes: {lb.probes.count('200')} x 200, {lb.probes.count('503')} x 503, then {lb.probes[-1]}"
    )
    assert not any(t.is_alive() for t in threads)
    assert probes == {
        "isAlive": 200,  # liveness must not restart a draining pod
        "oip ready": 503,
        "oip live": 200,
        "http run": 200,  # a new connection, served
        "grpc health": "NOT_SERVING",
        "oip ServerReady": False,
        "grpc run": "OK",
    }
    draining = lb.probes[lb.probes.index("503") :]  # never ready again once draining, then refused
    assert "200" not in draining and "refused" not in draining[:-1]
    assert (web.lost, web.failed, rpc.lost, rpc.failed) == ([], [], [], [])
    assert web.refused == 0 and rpc.refused == 0  # out of the balancer before the node stopped accepting
    assert web.moved == 6 and rpc.moved + len(rpc.cancelled_after) == 4
    # Served while not ready, on new connections too (the balancer had not acted yet).
    assert web.after(lb.not_ready_at, new_connection=True) > 0 and rpc.after(lb.not_ready_at) > 0
    logged = [orjson.loads(line)["arguments"]["tag"] for line in (logdir / "queries.jsonl").read_bytes().splitlines()]
    answered = [tag for tag, _, _ in web.answered + rpc.answered] + ["probe-http", "probe-grpc"]
    assert sorted(logged) == sorted(answered)  # the query log holds every answer, and nothing else


def test_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "sleep"}})
    node = start_node(tmp_path / "data", pkg, args=["--drain-seconds", "600"])
    node.proc.send_signal(signal.SIGTERM)
    node.wait_for(lambda: requests.get(node.http + "/ready", timeout=30).status_code == 503, what="draining")
    assert requests.post(node.url("svc", "e", "run"), json={"s": 0.01}, timeout=30).status_code == 200
    assert requests.get(node.http + "/isAlive/", timeout=30).status_code == 200
    node.proc.send_signal(signal.SIGINT)  # Ctrl-C twice: stop now (in-flight requests still finish)
    assert node.proc.wait(60) == 0
    assert "drain cut short by a second signal" in node.log()


def test_negative_drain_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [APINODE, "serve", "--data-dir", str(tmp_path), "--drain-seconds", "-1"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--drain-seconds must not be negative, got -1.0" in out.stderr
