"""The in-process node fixture itself: it serves, installs no signal handler, and stops clean."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import aiohttp
import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.inproc import _running, async_run_node, run_node
from tests.packages import function_package


def test_an_in_process_node_serves_and_leaves_nothing_behind(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid", "pool": {"floor": 2, "cruise": 2, "ceil": 2}}})
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    threads = set(threading.enumerate())
    with run_node(tmp_path / "data", pkg, args=["--admin-key", "k"]) as node:
        assert node.admin_key() == "k" and node.running()
        pid = requests.post(node.url("svc", "e", "run"), timeout=30).json()["response"]
        workers = node.worker_pids()
        assert pid in workers and len(workers) == 2 and all(_running(p) for p in workers)
        with grpc.insecure_channel(node.grpc) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert node.status()["ready"] is True
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # none installed off the main thread
    assert not node.running()
    assert not [p for p in workers if _running(p)]
    # gRPC keeps one poller thread per process, started with the first server or channel
    left = {t for t in threading.enumerate() if t not in threads and "_poll_wrapper" not in t.name}
    assert not left, left
    assert "loaded svc v1" in node.log() and "stopping" in node.log()


async def test_the_async_form_serves_an_asynchronous_client(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "echo"}})
    async with async_run_node(tmp_path / "data", pkg) as node, aiohttp.ClientSession() as session:
        async with session.post(node.url("svc", "e", "run"), json={"x": 1}) as r:
            assert r.status == 200 and (await r.json())["response"] == {"x": 1}
    assert not node.running()
