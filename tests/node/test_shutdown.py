"""SIGTERM: stop accepting, finish in-flight and queued requests, stop workers, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import requests

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
