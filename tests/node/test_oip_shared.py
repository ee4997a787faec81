"""What the Open Inference Protocol shares with the Dataiku-style API, on a live node: the
pool's queue bound (503 with Retry-After over HTTP, RESOURCE_EXHAUSTED over gRPC, in
the OIP error shape), and the query log. This module imports tritonclient's gRPC stubs,
never the node's (both declare the proto package `inference`)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from tests.node.test_query_log import read_lines
from tests.nodeproc import run_node
from tests.packages import logistic_package


def _body(rows: list[list[float]]) -> dict[str, Any]:
    flat = [v for r in rows for v in r]
    return {"inputs": [{"name": "input", "datatype": "FP64", "shape": [len(rows), 3], "data": flat}]}


def test_a_full_queue_and_the_query_log_apply_to_oip(tmp_path: Path) -> None:
    pkg, model = logistic_package(tmp_path)
    data = tmp_path / "data"
    cfg = data / "config" / "services" / "fraud" / "score.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"pool": {"floor": 1, "cruise": 1, "ceil": 1, "queue": 0}}))
    logdir = tmp_path / "qlog"
    with run_node(data, pkg, args=["--query-log", str(logdir)]) as node:
        url = node.http + "/v2/models/fraud.score/infer"
        rows = [[1.5, 3.0, 0.2], [-2.0, 1.0, 1.0]]
        ok = requests.post(url, json=_body(rows), timeout=30)
        assert ok.status_code == 200, ok.text
        labels = next(o["data"] for o in ok.json()["outputs"] if o["name"] == "label")
        assert labels == model.predict(np.array(rows)).tolist()

        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)  # its next request runs until SIGCONT: the pool is full
        try:
            held: dict[str, Any] = {}
            t = threading.Thread(target=lambda: held.update(r=requests.post(url, json=_body(rows[:1]), timeout=60)))
            t.start()
            node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
            t0 = time.monotonic()
            full = requests.post(url, json=_body(rows[:1]), timeout=30)
            assert time.monotonic() - t0 < 5  # refused at once, not after the queue timeout
            assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
            assert set(full.json()) == {"error"} and "overloaded" in full.json()["error"]
            with pytest.raises(InferenceServerException) as err:
                x = tg.InferInput("input", [1, 3], "FP64")
                x.set_data_from_numpy(np.array(rows[:1]))
                tg.InferenceServerClient(node.grpc).infer("fraud.score", [x])
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(60)
        assert held["r"].status_code == 200  # the held request was served once the worker went on
        assert node.pool("fraud", "score")["rejected"] == 2

    entries = [e for e in read_lines(logdir) if e.get("protocol") == "oip-http"]
    served = [e for e in entries if e["status"] == "ok"]
    assert served[0]["items"] == [
        {"amount": 1.5, "hour": 3, "distance": 0.2},
        {"amount": -2.0, "hour": 1, "distance": 1.0},
    ]
    assert [r["prediction"] for r in served[0]["results"]] == labels
    assert any(e["status"] == "OVERLOADED" for e in entries)
