"""Queues of prediction endpoints count batches: an ordinary closed loop is not overload,
a flood past what the workers can drain still is (refused at once)."""

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
import grpc
import pytest
import requests

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import NodeProc, run_node
from tests.packages import logistic_package

ROW = {"amount": 1.5, "hour": 3, "distance": 0.2}
PER_CLIENT = 15


async def _http_closed_loop(node: NodeProc, clients: int) -> Counter[int]:
    url = node.url("fraud", "score", "predict")
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client() -> None:
            for _ in range(PER_CLIENT):
                async with session.post(url, json={"features": ROW}) as r:
                    await r.read()
                    statuses[r.status] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


async def _grpc_closed_loop(node: NodeProc, clients: int) -> Counter[str]:
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        req = pb.PredictRequest(service="fraud", endpoint="score")
        req.features["amount"].number = ROW["amount"]
        req.features["hour"].integer = int(ROW["hour"])
        req.features["distance"].number = ROW["distance"]

        async def client() -> None:
            for _ in range(PER_CLIENT):
                try:
                    await stub.Predict(req, timeout=60)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return codes


@pytest.mark.parametrize("clients", [32, 64])
def test_a_closed_loop_with_default_settings_gets_no_503(tmp_path: Path, clients: int) -> None:
    pkg, _ = logistic_package(tmp_path, pool={})  # the default pool settings (queue 16)
    with run_node(tmp_path / "data", pkg) as node:
        assert node.pool("fraud", "score")["pool"]["queue"] == 16
        http = asyncio.run(_http_closed_loop(node, clients))
        assert http == {200: clients * PER_CLIENT}, http
        codes = asyncio.run(_grpc_closed_loop(node, clients))
        assert codes == {"OK": clients * PER_CLIENT}, codes
        assert node.pool("fraud", "score")["rejected"] == 0


def test_a_flood_past_what_the_workers_drain_is_refused_at_once(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1})  # queue 16, max_batch 64
    data = tmp_path / "data"
    with run_node(data, pkg, args=["--ping-timeout", "300"]) as node:
        multi = node.url("fraud", "score", "predict-multi")
        body = {"items": [{"features": ROW}] * 64}
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)  # it holds what it takes: the queue fills
        held: list[requests.Response] = []
        try:
            first = threading.Thread(target=lambda: held.append(requests.post(multi, json=body, timeout=60)))
            first.start()
            node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
            fill = [
                threading.Thread(target=lambda: held.append(requests.post(multi, json=body, timeout=60)))
                for _ in range(16)
            ]
            for t in fill:
                t.start()
            node.wait_for(lambda: node.pool("fraud", "score")["queueRows"] == 16 * 64, what="16 batches queued")
            t0 = time.monotonic()
            r = requests.post(node.url("fraud", "score", "predict"), json={"features": ROW}, timeout=30)
            assert time.monotonic() - t0 < 5  # at once, not after the queue timeout
            assert r.status_code == 503 and r.json()["errorType"] == "OVERLOADED", r.text
            assert "1024 rows queued (queue limit 16 batches of 64 rows" in r.json()["message"]
            with grpc.insecure_channel(node.grpc) as ch, pytest.raises(grpc.RpcError) as err:
                pbg.ApiNodeStub(ch).Predict(pb.PredictRequest(service="fraud", endpoint="score"), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            os.kill(worker, signal.SIGCONT)
        for t in [first, *fill]:
            t.join(60)
        assert [h.status_code for h in held] == [200] * 17, [h.text for h in held if h.status_code != 200]
        assert node.pool("fraud", "score")["rejected"] == 2


def test_a_function_queue_still_counts_requests(tmp_path: Path) -> None:
    """Dataiku's meaning for one-request-at-a-time endpoints: `queue` requests wait."""
    from tests.packages import function_package

    pkg = function_package(
        tmp_path, {"e": {"function": "sleep", "pool": {"floor": 1, "cruise": 1, "ceil": 1, "queue": 2}}}
    )
    with run_node(tmp_path / "data", pkg) as node:
        url = node.url("svc", "e", "run")
        out: list[Any] = []
        ts = [threading.Thread(target=lambda: out.append(requests.post(url, json={"s": 2}, timeout=60)))]
        ts[0].start()
        node.wait_for(lambda: node.pool("svc", "e")["workers"]["busy"] == 1, what="a busy worker")
        ts += [
            threading.Thread(target=lambda: out.append(requests.post(url, json={"s": 0}, timeout=60))) for _ in range(2)
        ]
        for t in ts[1:]:
            t.start()
        node.wait_for(lambda: node.pool("svc", "e")["queueDepth"] == 2, what="a full queue")
        r = requests.post(url, json={"s": 0}, timeout=30)
        assert r.status_code == 503 and "(queue limit 2)" in r.json()["message"], r.text
        for t in ts:
            t.join(60)
        assert json.dumps(sorted(o.status_code for o in out)) == "[200, 200, 200]"


def test_a_queue_the_workers_cannot_drain_within_the_timeout_is_refused(tmp_path: Path) -> None:
    """The drain bound: with runs measured slow, far fewer than `queue` batches may wait."""
    pool = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 100, "max_batch": 1}  # timeout 10 s
    pkg, _ = logistic_package(tmp_path, pool=pool)
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        url = node.url("fraud", "score", "predict")
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        answers: list[requests.Response] = []
        threads: list[threading.Thread] = []

        def send() -> None:
            t = threading.Thread(target=lambda: answers.append(requests.post(url, json={"features": ROW}, timeout=60)))
            t.start()
            threads.append(t)

        os.kill(worker, signal.SIGSTOP)  # one run of 5 s: the measured run time grows to ~0.5 s
        send()
        node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
        time.sleep(5)
        os.kill(worker, signal.SIGCONT)
        threads[0].join(60)
        os.kill(worker, signal.SIGSTOP)
        try:
            send()
            node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
            for queued in range(1, 101):
                send()
                node.wait_for(
                    lambda q=queued: len(answers) > 1 or node.pool("fraud", "score")["queueDepth"] == q, what="queued"
                )
                if len(answers) > 1:
                    break
            refused = answers[1]
            assert refused.status_code == 503 and refused.json()["errorType"] == "OVERLOADED", refused.text
            assert "what the workers drain within the queue timeout" in refused.json()["message"], refused.text
            assert queued < 50  # far below `queue` (100 batches of one row)
        finally:
            os.kill(worker, signal.SIGCONT)
        for t in threads:
            t.join(60)
