"""Supervisor behaviour on a real node: pools, queues, timeouts, faults, fairness.

Nodes run in the test process (tests.inproc), but where the test reads the front's process
(its niceness), the workers' own output (their tracebacks) or the command line's refusal."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests import nodeproc
from tests.inproc import run_node
from tests.nodeclient import NodeClient
from tests.packages import function_package


def call(node: NodeClient, endpoint: str, body: dict[str, Any] | None = None, timeout: float = 30) -> requests.Response:
    return requests.post(node.url("svc", endpoint, "run"), json=body or {}, timeout=timeout)


def grpc_run(node: NodeClient, endpoint: str, args: dict[str, Any], timeout: float | None = None) -> Any:
    s = struct_pb2.Struct()
    s.update(args)
    with grpc.insecure_channel(node.grpc) as ch:
        return pbg.ApiNodeStub(ch).Run(pb.RunRequest(service="svc", endpoint=endpoint, arguments=s), timeout=timeout)


def in_background(fn: Any, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def test_floor_workers_start_before_traffic(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid", "pool": {"floor": 3, "cruise": 3, "ceil": 4}}})
    with run_node(tmp_path / "data", pkg) as node:
        pool = node.pool("svc", "e")
        assert pool["workers"]["idle"] == 3 and pool["ready"] is True
        assert len(pool["workers"]["pids"]) == 3
        assert requests.get(node.http + "/ready").status_code == 200


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_workers_run_niced_below_the_front(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid", "pool": {"floor": 2, "cruise": 2, "ceil": 2}}})
    with nodeproc.run_node(tmp_path / "data", pkg) as node:  # the default: 10
        pids = node.pool("svc", "e")["workers"]["pids"]
        front = _niceness(node.proc.pid)
        assert [_niceness(p) for p in pids] == [min(front + 10, 19)] * 2
    with nodeproc.run_node(tmp_path / "data2", pkg, args=["--worker-nice", "0"]) as node:
        pid = call(node, "e").json()["response"]
        assert _niceness(pid) == _niceness(node.proc.pid)


def test_pool_grows_to_ceil_then_shrinks_to_cruise(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 2, "ceil": 4, "queue": 20, "idle_grace_ms": 300}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        with ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(lambda i: call(node, "e", {"s": 1.0, "tag": i}), range(8)))
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        pids = {r.json()["response"]["pid"] for r in answers}
        assert len(pids) == 4, f"expected the pool to grow to ceil=4, saw workers {pids}"
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["total"] == 2, what="shrink to cruise=2")
        time.sleep(1.0)  # and not below cruise
        assert node.pool("svc", "e")["workers"]["total"] == 2


def test_queue_overflow_is_rejected_at_once(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 2, "timeout": 10000}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        threads = [in_background(call, node, "e", {"s": 2.0}) for _ in range(3)]  # 1 running + 2 queued
        node.wait_for(lambda: node.pool("svc", "e")["queueDepth"] == 2, what="a full queue")
        t0 = time.monotonic()
        r = call(node, "e", {"s": 0})
        assert time.monotonic() - t0 < 0.5
        assert r.status_code == 503 and r.json()["errorType"] == "OVERLOADED"
        assert int(r.headers["Retry-After"]) >= 1
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node, "e", {"s": 0})
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the same Retry-After on both transports (gRPC's in the trailing metadata)
        assert dict(err.value.trailing_metadata() or ())["retry-after"] == r.headers["Retry-After"]  # type: ignore[attr-defined]
        for t in threads:
            t.join()
        assert node.pool("svc", "e")["rejected"] == 2


def test_request_waiting_past_timeout_is_rejected(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 5, "timeout": 300}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        busy = in_background(call, node, "e", {"s": 3.0})
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["busy"] == 1, what="a busy worker")
        t0 = time.monotonic()
        r = call(node, "e", {"s": 0})
        waited = time.monotonic() - t0
        assert r.status_code == 503 and r.json()["errorType"] == "QUEUE_TIMEOUT", r.text
        assert 0.25 < waited < 1.5
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node, "e", {"s": 0})
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        busy.join()
        assert node.pool("svc", "e")["timed_out"] == 2


def test_grpc_deadline_and_http_disconnect_leave_the_queue(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 1, "timeout": 20000}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        busy = in_background(call, node, "e", {"s": 4.0})
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["busy"] == 1, what="a busy worker")
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node, "e", {"s": 0}, timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        node.wait_for(
            lambda: node.pool("svc", "e")["queueDepth"] == 0,
            what="the expired call to leave the queue",
        )
        with pytest.raises(requests.exceptions.ReadTimeout):
            call(node, "e", {"s": 0}, timeout=0.3)  # the client gives up and disconnects
        node.wait_for(lambda: node.pool("svc", "e")["cancelled"] == 2, what="the disconnect to cancel")
        assert node.pool("svc", "e")["queueDepth"] == 0
        # the one queue place is free again: a patient request is served after the busy one
        assert call(node, "e", {"s": 0, "tag": "after"}).json()["response"]["tag"] == "after"
        busy.join()


def test_run_time_limit_kills_and_replaces_the_worker(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 1, "ceil": 1, "max_run_ms": 500}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        old = node.pool("svc", "e")["workers"]["pids"]
        t0 = time.monotonic()
        r = call(node, "e", {"s": 10})
        assert r.status_code == 504 and r.json()["errorType"] == "RUN_TIMEOUT", r.text
        assert time.monotonic() - t0 < 3
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node, "e", {"s": 10})
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        ok = call(node, "e", {"s": 0.01})
        assert ok.status_code == 200 and ok.json()["response"]["pid"] not in old
        pool = node.pool("svc", "e")
        assert pool["run_timeouts"] == 2 and pool["restarts"] >= 2 and pool["crashed"] == 0


def test_kill_9_of_a_busy_worker_fails_only_its_request(tmp_path: Path) -> None:
    pool_cfg = {"floor": 3, "cruise": 3, "ceil": 3, "queue": 50}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}})
    with run_node(tmp_path / "data", pkg) as node:
        results: list[requests.Response] = []
        lock = threading.Lock()
        stop = time.monotonic() + 4

        def client(i: int) -> None:
            while time.monotonic() < stop:
                r = call(node, "e", {"s": 0.1, "tag": i})
                with lock:
                    results.append(r)

        threads = [in_background(client, i) for i in range(6)]
        time.sleep(1.5)
        victim = node.pool("svc", "e")["workers"]["pids"][0]
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join()
        failed = [r for r in results if r.status_code != 200]
        assert len(results) > 60
        assert len(failed) == 1, [r.text for r in failed]
        body = failed[0].json()
        assert failed[0].status_code == 500 and body["errorType"] == "WORKER_CRASHED"
        assert str(victim) in body["message"] and "SIGKILL" in body["message"]
        pool = node.pool("svc", "e")
        assert pool["crashed"] == 1 and pool["workers"]["total"] == 3 and victim not in pool["workers"]["pids"]


def test_crash_in_user_code_is_reported_and_replaced(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"crash": {"function": "crash"}, "boom": {"function": "boom"}})
    with nodeproc.run_node(tmp_path / "data", pkg) as node:
        r = call(node, "crash", {"code": 7})
        assert r.status_code == 500 and r.json()["errorType"] == "WORKER_CRASHED"
        assert "exited with code 7" in r.json()["message"]
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node, "crash", {"code": 7})
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # an exception is not a crash: the same worker keeps serving
        pids = node.pool("svc", "boom")["workers"]["pids"]
        r = call(node, "boom", {"message": "bad input 42"})
        assert r.status_code == 500 and r.json()["errorType"] == "USER_CODE_ERROR"
        assert r.json()["message"] == "ValueError: bad input 42"
        assert "Traceback" not in r.text
        assert node.pool("svc", "boom")["workers"]["pids"] == pids
        node.wait_for(lambda: "ValueError: bad input 42" in node.log(), what="the traceback in the log")


def test_repeated_crashes_back_off_and_show_not_ready(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"crash": {"function": "crash", "pool": {"queue": 0}}, "ok": {"function": "pid"}})
    with run_node(tmp_path / "data", pkg) as node:
        kinds = [call(node, "crash").json()["errorType"] for _ in range(4)]
        assert kinds[:2] == ["WORKER_CRASHED", "WORKER_CRASHED"]
        assert "NOT_READY" in kinds[2:]  # while backing off, answered at once
        ready = requests.get(node.http + "/ready")
        assert ready.status_code == 503
        reasons = " ".join(ready.json()["notReady"])
        assert "svc/crash" in reasons and "exited with code 7" in reasons
        assert call(node, "ok").status_code == 200  # other endpoints are unaffected
        node.wait_for(lambda: requests.get(node.http + "/ready").status_code == 200, what="recovery")
        assert node.pool("svc", "crash")["crashed"] == 2


def test_hung_worker_is_detected_by_ping_and_replaced(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"hang": {"function": "hang"}, "ok": {"function": "pid"}})
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "1"]) as node:
        t0 = time.monotonic()
        r = call(node, "hang")
        assert r.status_code == 500 and "stopped answering pings" in r.json()["message"], r.text
        assert time.monotonic() - t0 < 5
        node.wait_for(lambda: node.pool("svc", "hang")["ready"], what="a replacement worker")
        assert node.pool("svc", "hang")["crashed"] == 1


def test_flood_on_one_endpoint_does_not_starve_another(tmp_path: Path) -> None:
    pkg = function_package(
        tmp_path,
        {
            "a": {"function": "sleep", "pool": {"floor": 1, "cruise": 1, "ceil": 4, "queue": 100}},
            "b": {"function": "sleep", "pool": {"floor": 1, "cruise": 1, "ceil": 4, "queue": 100}},
        },
    )
    with run_node(tmp_path / "data", pkg, args=["--max-workers", "4"]) as node:
        flood_until = time.monotonic() + 5

        def flood() -> None:
            while time.monotonic() < flood_until:
                call(node, "a", {"s": 0.2})

        threads = [in_background(flood) for _ in range(12)]
        node.wait_for(
            lambda: node.pool("svc", "a")["workers"]["total"] == 3,
            what="a to take the spare workers",
        )
        latencies = []
        for _ in range(5):
            t0 = time.monotonic()
            assert call(node, "b", {"s": 0.05}).status_code == 200
            latencies.append(time.monotonic() - t0)
        assert max(latencies) < 1.0, latencies  # b's floor worker serves it, however long a's queue
        # b now floods too: the spare workers are shared, b is given its part back
        b_threads = [in_background(lambda: [call(node, "b", {"s": 0.2}) for _ in range(8)]) for _ in range(6)]
        node.wait_for(lambda: node.pool("svc", "b")["workers"]["total"] >= 2, what="b to get a worker back")
        status = node.status()["supervisor"]
        assert status["workers"] <= 4
        for t in threads + b_threads:
            t.join()


def test_pool_config_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid"}})
    cfg = tmp_path / "data" / "config" / "services" / "svc" / "e.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('{"pool": {"floor": 3, "cruise": 2, "ceil": 8}}')
    with pytest.raises(RuntimeError) as err:
        nodeproc.run_node(tmp_path / "data", pkg).__enter__()
    assert str(cfg) in str(err.value) and "pool.floor" in str(err.value)
    cfg.write_text('{"pool": {"queue": "many"}}')
    with pytest.raises(RuntimeError) as err:
        nodeproc.run_node(tmp_path / "data", pkg).__enter__()
    assert "pool.queue must be an integer" in str(err.value)
    cfg.write_text('{"pool": {"floor": 2, "cruise": 2, "ceil": 3}}')  # a valid file overrides the package
    with nodeproc.run_node(tmp_path / "data", pkg) as node:
        assert node.pool("svc", "e")["workers"]["total"] == 2


def test_function_arguments_by_name(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"add": {"function": "add"}})
    with run_node(tmp_path / "data", pkg) as node:
        r = call(node, "add", {"a": 2, "z": 5})
        assert r.json()["response"] == {"sum": 3, "extra": {"z": 5}}
        r = call(node, "add", {"b": 2})
        assert r.status_code == 400 and "'a'" in r.json()["message"]
        assert grpc_run(node, "add", {"a": 2, "b": 3}).response.struct_value["sum"] == 5


def test_defaults_bend_to_the_bounds_given(tmp_path: Path) -> None:
    from node.supervisor.settings import PoolConfigError, validate

    assert validate({"floor": 1, "ceil": 1}, "x").cruise == 1
    assert validate({"floor": 12}, "x").ceil == 12 and validate({"floor": 12}, "x").cruise == 12
    assert validate({"ceil": 4}, "x").cruise == 2
    with pytest.raises(PoolConfigError):
        validate({"floor": 3, "cruise": 2}, "x")  # explicit values are held to the rule
