"""Worker faults on a real node: spawns that fail, crashes under load, closed channels."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path
from typing import Any

import requests

from tests.nodeproc import NodeProc, run_node
from tests.packages import function_package


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
