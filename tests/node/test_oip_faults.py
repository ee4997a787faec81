"""A failure the node did not foresee still answers in the Open Inference Protocol's shape.

The fault is real: a package whose manifest claims three classes for a model that answers
two probabilities loads (it has no test query to give it away), and every prediction then
fails inside the node with a ValueError, not with one of its own errors. The Dataiku-style
API answers its own 500; OIP must answer `{"error": ...}` on HTTP, INTERNAL on gRPC, and an
`error_message` in a stream that goes on.
"""

from __future__ import annotations

import json
import queue
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from apz.archive import write_package
from tests.inproc import InProcNode, run_node
from tests.packages import logistic_package

ROW = {"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 0.5]}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcNode]:
    tmp = tmp_path_factory.mktemp("oip-faults")
    honest, _ = logistic_package(tmp)
    with zipfile.ZipFile(honest) as z:
        manifest = json.loads(z.read("manifest.json"))
        onnx = z.read("models/score.onnx")
    score = manifest["endpoints"]["score"]
    score["classes"] = ["FRAUD", "OK", "MAYBE"]  # the model answers two probabilities
    del score["test_queries"]
    manifest["service"] = "liar"
    del manifest["files"]
    liar = tmp / "liar.apz"
    write_package(liar, manifest, {"models/score.onnx": onnx})
    with run_node(tmp / "data", honest, liar) as n:
        yield n


def test_http_answers_a_bug_in_the_oip_error_shape(node: InProcNode) -> None:
    r = requests.post(node.http + "/v2/models/liar.score/infer", json={"inputs": [ROW]}, timeout=30)
    assert r.status_code == 500 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"error": "internal error: ValueError"}
    # the Dataiku-style API of the same endpoint fails the same way, in its own shape
    dss = requests.post(
        node.url("liar", "score", "predict"), json={"features": {"amount": 1.0, "hour": 2, "distance": 0.5}}, timeout=30
    )
    assert dss.status_code == 500 and dss.json()["errorType"] == "INTERNAL_ERROR"
    # the same model with an honest manifest answers, on the same node
    ok = requests.post(node.http + "/v2/models/fraud.score/infer", json={"inputs": [ROW]}, timeout=30)
    assert ok.status_code == 200, ok.text


def test_grpc_answers_a_bug_with_internal_and_the_stream_goes_on(node: InProcNode) -> None:
    c = tg.InferenceServerClient(node.grpc)
    x = tg.InferInput("input", [1, 3], "FP64")
    x.set_data_from_numpy(np.array([[1.0, 2.0, 0.5]]))
    with pytest.raises(InferenceServerException) as err:
        c.infer("liar.score", [x])
    assert err.value.status() == "StatusCode.INTERNAL" and "ValueError" in err.value.message()

    results: queue.Queue[Any] = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer("liar.score", [x], request_id="bug")
        c.async_stream_infer("fraud.score", [x], request_id="fine")
        (r1, e1), (r2, e2) = results.get(timeout=30), results.get(timeout=30)
    finally:
        c.stop_stream()
    assert r1 is None and e1.message() == "internal error: ValueError"
    assert e2 is None and r2.get_response().id == "fine" and r2.as_numpy("label").shape == (1,)
