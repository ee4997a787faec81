"""The in-process node fixture itself: it serves, installs no signal handler, and stops clean."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.inproc import _running, async_run_node, run_node, start_node
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


def test_nodes_side_by_side_start_their_workers_together(tmp_path: Path) -> None:
    """uvloop refuses to fork while another of its loops forks: two in-process nodes whose
    pools start workers at the same moment must both get all of them (tests/inproc._Loop)."""
    pool = {"floor": 6, "cruise": 6, "ceil": 6}
    pkgs = [function_package(tmp_path / f"p{i}", {"e": {"function": "pid", "pool": pool}}) for i in range(3)]
    with ThreadPoolExecutor(3) as ex:
        starts = [ex.submit(start_node, tmp_path / f"node{i}", pkg) for i, pkg in enumerate(pkgs)]
        nodes = [s.result() for s in starts]
    try:
        for node in nodes:
            assert node.pool("svc", "e")["workers"]["total"] == 6
            assert node.pool("svc", "e")["spawn_failures"] == 0
            assert "Racing" not in node.log()
    finally:
        for node in nodes:
            node.stop()
