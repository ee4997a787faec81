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


def test_lag_sheds_when_sustained_not_on_a_single_stall() -> None:
    m = LagMonitor(shed_lag_ms=100)
    m.record(10.0, 1.5)  # a stall (a package load, a paused process): one late sample
    assert not m.behind
    m.record(10.05, 0.0)
    m.record(10.1, 0.0)
    assert not m.behind and m.lag_s == 0.0
    s = LagMonitor(shed_lag_ms=100)
    for i in range(3):  # saturated: late at every sample
        s.record(20.0 + 0.3 * i, 0.25)
    assert s.behind and s.lag_s == 0.25
    s.record(20.0 + WINDOW_S + 0.7, 0.001)  # the first two left the window
    s.record(20.0 + WINDOW_S + 0.75, 0.001)
    assert not s.behind and s.lag_s == 0.001
    off = LagMonitor(shed_lag_ms=0)
    for i in range(5):
        off.record(1.0 + i / 10, 5.0)
    assert not off.behind


def test_a_front_that_falls_behind_refuses_new_requests_to_a_queueing_pool(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1})
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        url = node.url("fraud", "score", "predict")
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)  # a held request, and one queued: the pool queues
        answers: list[requests.Response] = []
        threads: list[threading.Thread] = []

        def send() -> None:
            t = threading.Thread(target=lambda: answers.append(requests.post(url, json={"features": ROW}, timeout=120)))
            t.start()
            threads.append(t)

        send()
        node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
        send()
        node.wait_for(lambda: node.pool("fraud", "score")["queueDepth"] == 1, what="a queued request")
        try:
            # The front runs 20 ms in every 320: its event loop is late at every sample, as
            # a saturated one is. Requests sent meanwhile are refused for the lag.
            deadline = time.monotonic() + 60
            next_send = time.monotonic() + 1.5
            while time.monotonic() < deadline and not any(a.status_code == 503 for a in answers):
                os.kill(node.proc.pid, signal.SIGSTOP)
                time.sleep(0.3)
                os.kill(node.proc.pid, signal.SIGCONT)
                time.sleep(0.02)
                if time.monotonic() >= next_send:
                    send()
                    next_send = time.monotonic() + 0.5
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
            time.sleep(0.5)
            os.kill(worker, signal.SIGCONT)
        for t in threads:
            t.join(120)
        refused = [a for a in answers if a.status_code == 503]
        assert refused, [a.status_code for a in answers]
        assert all(a.json()["errorType"] == "OVERLOADED" and "ms behind" in a.json()["message"] for a in refused)
        assert int(refused[0].headers["Retry-After"]) >= 1
        assert sorted(a.status_code for a in answers).count(200) >= 2  # the held and the queued one
        assert node.pool("fraud", "score")["rejected"] == len(refused)


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
