"""Admission past capacity: a front that falls behind refuses at once (and answers the
refusal), instead of letting requests pile up in socket buffers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import requests

from node.supervisor.lag import WINDOW_S, LagMonitor
from tests.nodeproc import run_node
from tests.packages import logistic_package

ROW = {"amount": 1.5, "hour": 3, "distance": 0.2}


def test_lag_is_the_worst_sample_of_the_last_window() -> None:
    m = LagMonitor(shed_lag_ms=100)
    m.record(10.0, 0.3)
    assert m.behind and m.lag_s == 0.3
    m.record(10.0 + WINDOW_S / 2, 0.0)
    assert m.behind  # still within the window of the spike
    m.record(10.0 + WINDOW_S + 0.01, 0.001)
    assert not m.behind and m.lag_s == 0.001
    off = LagMonitor(shed_lag_ms=0)
    off.record(1.0, 5.0)
    assert not off.behind


def test_a_front_that_fell_behind_refuses_new_requests_to_a_queueing_pool(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1})
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        url = node.url("fraud", "score", "predict")
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)  # a held request, and one queued: the pool queues
        held: list[requests.Response] = []
        ts = [threading.Thread(target=lambda: held.append(requests.post(url, json={"features": ROW}, timeout=60)))]
        ts[0].start()
        node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
        ts.append(threading.Thread(target=lambda: held.append(requests.post(url, json={"features": ROW}, timeout=60))))
        ts[1].start()
        node.wait_for(lambda: node.pool("fraud", "score")["queueDepth"] == 1, what="a queued request")
        try:
            # The front stops for 1.5 s: its event loop is then that far behind.
            os.kill(node.proc.pid, signal.SIGSTOP)
            time.sleep(1.5)
            os.kill(node.proc.pid, signal.SIGCONT)
            time.sleep(0.1)  # its sampler wakes up 1.5 s late: the lag is known now
            refused = requests.post(url, json={"features": ROW}, timeout=10)  # queued instead: a ReadTimeout
            assert refused.status_code == 503, refused.text  # the queue is far from full: the lag refuses
            assert refused.json()["errorType"] == "OVERLOADED", refused.text
            assert "ms behind" in refused.json()["message"], refused.text
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            os.kill(worker, signal.SIGCONT)
        for t in ts:
            t.join(60)
        assert [h.status_code for h in held] == [200, 200]


async def _flood(url: str, n: int) -> tuple[Counter[int], list[str]]:
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def one() -> None:
            try:
                async with session.post(url, json={"features": ROW}, timeout=aiohttp.ClientTimeout(60)) as r:
                    await r.read()
                    statuses[r.status] += 1
            except Exception as exc:  # an unanswered request is what this test is about
                failures.append(repr(exc))

        await asyncio.gather(*(one() for _ in range(n)))
    return statuses, failures


def test_a_flood_on_a_saturated_one_cpu_front_gets_every_refusal_answered(tmp_path: Path) -> None:
    """Far more concurrent requests than the queue takes, the worker stopped, the node on one
    CPU: every request is answered (refused at once, or served once the worker goes on)."""
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1, "queue": 1, "max_batch": 8})
    with run_node(tmp_path / "data", pkg, cpus={0}, args=["--ping-timeout", "300"]) as node:
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)
        out: dict[str, Any] = {}
        t = threading.Thread(
            target=lambda: out.update(r=asyncio.run(_flood(node.url("fraud", "score", "predict"), 600)))
        )
        t.start()
        try:
            node.wait_for(lambda: node.pool("fraud", "score")["rejected"] >= 500, timeout=120, what="refusals")
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(120)
        statuses, failures = out["r"]
        assert failures == []
        assert sum(statuses.values()) == 600 and set(statuses) <= {200, 503}, statuses
        assert statuses[503] >= 500 and statuses[200] >= 1, statuses
