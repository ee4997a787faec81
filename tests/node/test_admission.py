"""Admission past capacity: a front that falls behind refuses at once (and answers the
refusal), instead of letting requests pile up in socket buffers."""

from __future__ import annotations

import asyncio
import json
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
from tests.node.test_query_log import read_lines
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


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one series of the /metrics text (0 when absent)."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_full_pool_refuses_before_reading_the_body_with_the_dataiku_answer(tmp_path: Path) -> None:
    """The HTTP fast refusal (node/http/refuse.py): a saturated pool answers 503 OVERLOADED
    in the Dataiku format, with Retry-After and the DSS headers, before the body is read (a
    body that is not even JSON gets the same refusal), counted as every refusal is; a caller
    without the service's key still gets its 401."""
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1, "queue": 0, "timeout": 4000})
    keys = tmp_path / "data" / "config" / "services" / "fraud" / "api_keys.json"
    keys.parent.mkdir(parents=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "k1", "key": "s3cret"}]}))
    auth = {"Authorization": "Bearer s3cret"}
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        url = node.url("fraud", "score", "predict")
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)  # its next request runs until SIGCONT: the pool is full
        held: dict[str, requests.Response] = {}
        t = threading.Thread(
            target=lambda: held.update(r=requests.post(url, json={"features": ROW}, headers=auth, timeout=120))
        )
        t.start()
        try:
            node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
            full = requests.post(url, json={"features": ROW}, headers=auth, timeout=30)
            not_json = requests.post(url, data=b'{"features": ', headers=auth, timeout=30)
            no_key = requests.post(url, json={"features": ROW}, timeout=30)
            wrong_key = requests.post(url, json={"features": ROW}, headers={"Authorization": "Bearer nope"}, timeout=30)
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(120)
        for r in (full, not_json):
            assert r.status_code == 503, r.text
            assert set(r.json()) == {"errorType", "message", "detailedMessage"}
            assert r.json()["errorType"] == "OVERLOADED" and "rows queued (queue limit 0 batches" in r.json()["message"]
            assert r.headers["Retry-After"] == "2"  # half the queue timeout, in whole seconds
            assert r.headers["Content-Type"] == "application/json"
            assert r.headers["DSS-API-Version"] == "v1" and r.headers["DSS-Version"].startswith("apinode-")
        assert no_key.status_code == 401 and no_key.json()["errorType"] == "UNAUTHORIZED"
        assert wrong_key.status_code == 401, wrong_key.text
        assert held["r"].status_code == 200  # the held request was served once the worker went on
        assert node.pool("fraud", "score")["rejected"] == 2
        text = requests.get(node.http + "/metrics", timeout=30).text
        labels = {"service": "fraud", "endpoint": "score", "generation": "v1", "protocol": "http"}
        assert _metric(text, "apinode_requests_total", outcome="OVERLOADED", **labels) == 2
        unresolved = {**labels, "generation": ""}  # a refused key resolves no generation
        assert _metric(text, "apinode_requests_total", outcome="UNAUTHORIZED", **unresolved) == 2
        assert _metric(text, "apinode_requests_total", outcome="ok", **labels) == 1
        duration = {k: v for k, v in labels.items() if k != "generation"}
        assert _metric(text, "apinode_request_duration_seconds_count", **duration) == 5


def test_with_a_query_log_a_refusal_keeps_its_features(tmp_path: Path) -> None:
    """The fast refusal does not read the body, so a node that logs queries refuses the
    ordinary way: the OVERLOADED entry keeps the caller's features."""
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1, "queue": 0})
    logdir = tmp_path / "qlog"
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300", "--query-log", str(logdir)]) as node:
        url = node.url("fraud", "score", "predict")
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)
        held: dict[str, requests.Response] = {}
        t = threading.Thread(target=lambda: held.update(r=requests.post(url, json={"features": ROW}, timeout=120)))
        t.start()
        try:
            node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
            full = requests.post(url, json={"features": {**ROW, "amount": 7.5}}, timeout=30)
            not_json = requests.post(url, data=b'{"features": ', timeout=30)
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(120)
        assert full.status_code == 503 and full.json()["errorType"] == "OVERLOADED"
        assert not_json.status_code == 400  # the body is parsed before the pool is asked
        assert held["r"].status_code == 200
    refused = [e for e in read_lines(logdir) if e["status"] == "OVERLOADED"]
    assert [e["features"] for e in refused] == [{**ROW, "amount": 7.5}]
