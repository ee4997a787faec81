"""SIGTERM: stop accepting, finish in-flight and queued requests, stop workers, exit 0 (README, Operations)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import orjson
import requests

from tests.nodeproc import start_node
from tests.packages import function_package
from tests.signal_load import Tally, grpc_client, http_client


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


def test_sigterm_under_keepalive_load_answers_every_request_that_arrived(tmp_path: Path) -> None:
    pool = {"floor": 2, "cruise": 2, "ceil": 2, "queue": 500}
    pkg = function_package(tmp_path, {"e": {"function": "sleep", "pool": pool}})
    logdir = tmp_path / "qlog"
    node = start_node(tmp_path / "data", pkg, args=["--query-log", str(logdir)])
    web, rpc = Tally(), Tally()
    threads = [threading.Thread(target=http_client, args=(node.http_port, web, f"h{i}")) for i in range(6)]
    threads += [threading.Thread(target=grpc_client, args=(node.grpc, rpc, f"g{i}")) for i in range(6)]
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
    assert set(web.tags()) | set(rpc.tags()) <= logged
    assert not set(rpc.cancelled_after) & logged  # never run: not a request the node dropped
