"""Worker faults on a real node: spawns that fail, crashes under load, closed channels."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.nodeproc import NodeProc, run_node, start_node
from tests.packages import function_package
from tests.steady_load import Load


def call(node: NodeProc, endpoint: str, body: dict[str, Any] | None = None, timeout: float = 30) -> requests.Response:
    return requests.post(node.url("svc", endpoint, "run"), json=body or {}, timeout=timeout)


def test_failed_spawn_is_logged_retried_and_recovers(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid"}})
    with run_node(tmp_path / "data", pkg) as node, requests.Session() as kept:
        victim = call(node, "e").json()["response"]
        # A connection opened now needs no new descriptor later: the node can still answer it.
        assert kept.get(node.http + "/ready", timeout=10).status_code == 200
        soft, hard = resource.prlimit(node.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(node.proc.pid, resource.RLIMIT_NOFILE, (0, hard))  # no descriptor left
        try:
            os.kill(victim, signal.SIGKILL)
            node.wait_for(lambda: "cannot start a worker" in node.log(), what="the failed spawn in the log")
            assert "Too many open files" in node.log()
            ready = kept.get(node.http + "/ready", timeout=10)
            assert ready.status_code == 503, ready.text
            reasons = " ".join(ready.json()["notReady"])
            assert "svc/e" in reasons and "cannot start a worker" in reasons and "Too many open files" in reasons
            r = kept.post(node.url("svc", "e", "run"), json={}, timeout=10)  # refused at once, with the reason
            assert r.status_code == 503 and r.json()["errorType"] == "NOT_READY", r.text
            assert "Too many open files" in r.json()["message"]
        finally:
            resource.prlimit(node.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))  # descriptors are back
        node.wait_for(lambda: kept.get(node.http + "/ready", timeout=10).status_code == 200, 60, "recovery")
        r = call(node, "e")
        assert r.status_code == 200 and r.json()["response"] != victim
        pool = node.pool("svc", "e")
        assert pool["spawn_failures"] >= 1 and pool["crashed"] == 1
        assert pool["workers"]["starting"] == 0 and pool["workers"]["pids"] == [r.json()["response"]]


def _offset_package(out_dir: Path, version: str = "v1") -> Path:
    """A prediction endpoint (`x + 1` in ONNX) with the default pool settings."""
    from onnx import TensorProto, helper

    from apz.archive import write_package

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "k"], ["value"])], "offset", [x], [y], [k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    manifest = {
        "service": "pred",
        "version": version,
        "endpoints": {
            "score": {
                "type": "prediction",
                "task": "regression",
                "features": [{"name": "x", "type": "float", "onnx_type": "float"}],
                "model": {"path": "models/score.onnx", "input_mode": "columns", "value_output": "value"},
            }
        },
    }
    out = out_dir / f"pred-{version}.apz"
    write_package(out, manifest, {"models/score.onnx": model.SerializeToString()})
    return out


def test_kill_9_of_the_only_worker_fails_only_its_requests(tmp_path: Path) -> None:
    """Default pool settings (floor 1): the replacement starts at once, requests wait for
    it instead of overflowing the queue, and /ready stays 200 through a single crash."""
    clients = 6
    with run_node(tmp_path / "data", _offset_package(tmp_path)) as node:
        pool = node.pool("pred", "score")
        assert pool["pool"]["floor"] == 1 and pool["pool"]["queue"] == 16
        url = node.url("pred", "score", "predict")
        with Load(url, node.http + "/ready", {"features": {"x": 1.0}}, clients) as load:
            node.wait_for(lambda: load.outcomes["ok"] > 200, 60, "a steady load")
            # the only one, unless the load made the pool grow (then all, none of them starting)
            node.wait_for(lambda: node.pool("pred", "score")["workers"]["starting"] == 0, 60, "started workers")
            victims = node.pool("pred", "score")["workers"]["pids"]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            node.wait_for(lambda: node.pool("pred", "score")["crashed"] == len(victims), what="the crash")
            served = load.outcomes["ok"]
            node.wait_for(lambda: load.outcomes["ok"] > served + 500, 60, "serving again")
        load.report(f"kill -9 of {len(victims)} worker(s) under {clients} HTTP clients")
        assert not load.lost, load.lost[:5]
        # only what the killed worker held (one batch: at most one request per client, maybe none)
        assert set(load.outcomes) <= {"ok", "WORKER_CRASHED"}, load.outcomes
        assert load.outcomes["WORKER_CRASHED"] <= clients
        assert load.not_ready == 0
        pool = node.pool("pred", "score")
        assert pool["rejected"] == 0 and pool["timed_out"] == 0 and not set(pool["workers"]["pids"]) & set(victims)


LOSE_CODE = """
import os
import signal
import threading
import socket
import sys
import threading
import time
import time


def lose_channel(lose=False):
    # After answering, the worker shuts its side of the data channel and stops: the front
    # sees the channel closed while the process still runs (the window between a worker's
    # socket closing and its exit being seen, held open).
    def later():
        time.sleep(0.1)
        socket.socket(fileno=os.dup(int(sys.argv[1]))).shutdown(socket.SHUT_WR)
        os.kill(os.getpid(), signal.SIGSTOP)

    if lose:
        threading.Thread(target=later).start()
    return os.getpid()
"""


def test_request_for_a_worker_whose_channel_closed_goes_to_another(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "lose_channel"}}, code=LOSE_CODE)
    with run_node(tmp_path / "data", pkg) as node:
        lost = call(node, "e", {"lose": True}).json()["response"]
        node.wait_for(lambda: Path(f"/proc/{lost}/stat").read_text().split(") ")[1][0] == "T", what="it to stop")
        time.sleep(0.3)  # the front has seen the channel close
        r = call(node, "e")
        assert r.status_code == 200, r.text  # was 500 INTERNAL_ERROR "RuntimeError"
        assert r.json()["response"] != lost
        node.wait_for(lambda: not Path(f"/proc/{lost}").exists(), what="the stopped worker to be ended")
        node.wait_for(lambda: "closed its data channel without exiting" in node.log(), what="the reason logged")
        assert "never retrieved" not in node.log() and "handler is closed" not in node.log()


SLOW_CODE = """
import os
import time
from pathlib import Path

if (Path(__file__).parent / "SLOW").exists():
    time.sleep(3)  # a worker still loading when the node stops


def pid():
    return os.getpid()


def sleep(s=0.1):
    time.sleep(s)
    return os.getpid()
"""


def test_worker_still_loading_at_shutdown_exits_quietly(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid"}}, code=SLOW_CODE)
    node = start_node(tmp_path / "data", pkg)
    try:
        first = call(node, "e").json()["response"]
        (code,) = (tmp_path / "data").rglob("code/funcs.py")
        (code.parent / "SLOW").touch()
        os.kill(first, signal.SIGKILL)
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["starting"] == 1, what="a replacement loading")
        (loading,) = node.pool("svc", "e")["workers"]["pids"]
        assert node.stop() == 0
        node.wait_for(lambda: not Path(f"/proc/{loading}").exists(), what="the loading worker to exit")
        assert "BrokenPipeError" not in node.log() and "Traceback" not in node.log(), node.log()[-3000:]
    finally:
        node.stop()


def test_overload_message_counts_starting_workers_apart(tmp_path: Path) -> None:
    pool_cfg = {"floor": 1, "cruise": 1, "ceil": 2, "queue": 1}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool_cfg}}, code=SLOW_CODE)
    with run_node(tmp_path / "data", pkg) as node:
        (code,) = (tmp_path / "data").rglob("code/funcs.py")
        (code.parent / "SLOW").touch()  # the worker the pool grows by loads for 3 s
        busy = threading.Thread(target=call, args=(node, "e", {"s": 4}), daemon=True)
        busy.start()
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["busy"] == 1, what="a busy worker")
        queued = [threading.Thread(target=call, args=(node, "e", {"s": 0}), daemon=True) for _ in range(2)]
        for t in queued:
            t.start()
        node.wait_for(lambda: node.pool("svc", "e")["queueDepth"] == 2, what="a full queue")
        r = call(node, "e", {"s": 0})
        assert r.status_code == 503 and r.json()["errorType"] == "OVERLOADED", r.text
        assert "1 workers busy, 1 starting and 2 requests queued (queue limit 1)" in r.json()["message"]
        for t in [busy, *queued]:
            t.join(60)
