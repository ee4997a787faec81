"""SIGTERM with `--drain-seconds`: readiness off at once, serving on (new connections too) until a
load balancer has taken the node out, then the usual shutdown; nothing lost (README, Shutdown)."""

from __future__ import annotations

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
from tests.signal_load import Tally, grpc_client, http_client

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
    threads = [
        threading.Thread(
            target=http_client, args=(node.http_port, web, f"h{i}"), kwargs={"keep_alive": i < 4, "lb": lb}
        )
        for i in range(6)
    ]
    threads += [
        threading.Thread(target=grpc_client, args=(node.grpc, rpc, f"g{i}"), kwargs={"lb": lb}) for i in range(4)
    ]
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
    answered = web.tags() + rpc.tags() + ["probe-http", "probe-grpc"]
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
