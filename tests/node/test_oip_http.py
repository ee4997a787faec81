"""The Open Inference Protocol over HTTP, called with Triton's own `tritonclient.http` (and
with plain requests for the JSON forms), on a live node: scikit-learn's answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.oip_node import KEY, Served, served


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("oip-http")) as s:
        yield s


def client(s: Served) -> th.InferenceServerClient:
    return th.InferenceServerClient(s.node.http.removeprefix("http://"))


def matrix(x: np.ndarray[Any, Any], datatype: str, binary: bool = True) -> th.InferInput:
    t = th.InferInput("input", list(x.shape), datatype)
    t.set_data_from_numpy(x, binary_data=binary)
    return t


def texts(a: Any) -> list[str]:
    """BYTES outputs: bytes when they came in binary, text when they came in JSON."""
    return [v.decode() if isinstance(v, bytes) else v for v in a]


def test_server_and_model_metadata(node: Served) -> None:
    c = client(node)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "apinode"
    assert c.is_model_ready("fraud.score") and c.is_model_ready("fraud.score", "v1")
    meta = c.get_model_metadata("fraud.score")
    assert meta["name"] == "fraud.score" and sorted(meta["versions"]) == ["v1", "v2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert meta["parameters"]["classes"] == ["FRAUD", "OK"]
    shop = c.get_model_metadata("shop.score")
    assert [(i["name"], i["datatype"]) for i in shop["inputs"]] == [
        ("amount", "FP64"),
        ("hour", "FP64"),
        ("distance", "FP64"),
        ("merchant_category", "BYTES"),
    ]
    assert c.get_model_metadata("rent.score")["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    config = c.get_model_config("fraud.score")
    assert config["max_batch_size"] > 0 and config["input"][0]["dims"] == [3]
    index = {(m["name"], m["version"]) for m in c.get_model_repository_index()}
    assert {("fraud.score", "v1"), ("fraud.score", "v2"), ("shop.score", "v1"), ("rent.score", "v1")} <= index


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64", "BYTES"])
@pytest.mark.parametrize("binary", [True, False])
def test_matrix_infer_equals_scikit_learn(node: Served, datatype: str, binary: bool) -> None:
    x = node.fraud_x()
    if datatype == "INT64":
        x = np.round(x * 2)
    sent: np.ndarray[Any, Any] = {
        "FP64": x,
        "FP32": x.astype(np.float32),
        "INT64": x.astype(np.int64),
        "BYTES": np.array([[repr(float(v)).encode() for v in row] for row in x], dtype=object),
    }[datatype]
    seen = x.astype(np.float32).astype(np.float64) if datatype == "FP32" else x
    outputs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    r = client(node).infer("fraud.score", [matrix(sent, datatype, binary)], outputs=outputs, request_id="r1")
    assert r.get_response()["id"] == "r1" and r.get_response()["model_version"] == "v2"
    assert texts(r.as_numpy("label")) == node.fraud.predict(seen).tolist()
    np.testing.assert_allclose(r.as_numpy("probabilities"), node.fraud.predict_proba(seen), atol=1e-6)


def test_per_feature_inputs_with_a_string_category(node: Served) -> None:
    df = node.held_out
    inputs = []
    for name, datatype in (("amount", "FP64"), ("hour", "FP32"), ("distance", "FP64")):
        t = th.InferInput(name, [len(df), 1], datatype)
        t.set_data_from_numpy(df[[name]].to_numpy().astype(np.float32 if datatype == "FP32" else np.float64))
        inputs.append(t)
    cat = th.InferInput("merchant_category", [len(df)], "BYTES")
    cat.set_data_from_numpy(df["merchant_category"].to_numpy(dtype=object), binary_data=False)
    r = client(node).infer("shop.score", [*inputs, cat])  # no outputs asked: all, in binary
    assert texts(r.as_numpy("label")) == node.shop.predict(df).tolist()
    np.testing.assert_allclose(r.as_numpy("probabilities"), node.shop.predict_proba(df), atol=1e-4)
    only = client(node).infer("shop.score", [*inputs, cat], outputs=[th.InferRequestedOutput("probabilities")])
    assert only.as_numpy("label") is None and only.as_numpy("probabilities").shape == (len(df), 2)


def test_regression_and_plain_json(node: Served) -> None:
    df = node.held_out.head(5)
    body = {
        "inputs": [
            {"name": c, "datatype": "FP64", "shape": [5, 1], "data": [[v] for v in df[c]]}
            for c in ("amount", "hour", "distance")
        ]
        + [{"name": "merchant_category", "datatype": "BYTES", "shape": [5], "data": df["merchant_category"].tolist()}]
    }
    r = requests.post(node.node.http + "/v2/models/rent.score/infer", json=body, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), r.text
    out = r.json()["outputs"]
    assert out[0]["name"] == "prediction" and out[0]["shape"] == [5]
    np.testing.assert_allclose(out[0]["data"], node.rent.predict(df), rtol=1e-4)


def test_versions(node: Served) -> None:
    c = client(node)
    x = node.fraud_x(2)
    assert c.infer("fraud.score", [matrix(x, "FP64")], model_version="v1").get_response()["model_version"] == "v1"
    assert c.infer("fraud.score", [matrix(x, "FP64")]).get_response()["model_version"] == "v2"
    r = requests.get(node.node.http + "/v2/models/fraud.score/versions/v9", timeout=10)
    assert r.status_code == 404 and "v9" in r.json()["error"]
    stats = c.get_inference_statistics("fraud.score", "v1")["model_stats"][0]
    assert stats["version"] == "v1" and stats["inference_count"] >= 2 and stats["inference_stats"]["success"]["count"]


def oip_error(s: Served, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    url = s.node.http + path
    r = (
        requests.post(url, json=body, headers=headers, timeout=30)
        if body is not None
        else requests.get(url, timeout=30)
    )
    assert set(r.json()) == {"error"}, r.text
    return r.status_code, r.json()["error"]


def test_errors(node: Served) -> None:
    x = {"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 0.5]}
    assert oip_error(node, "/v2/models/nope.score")[0] == 404
    assert oip_error(node, "/v2/models/fraud.nope/infer", {"inputs": [x]})[0] == 404
    assert oip_error(node, "/v2/models/noname")[0] == 404
    status, message = oip_error(
        node, "/v2/models/fraud.score/infer", {"inputs": [{**x, "shape": [1, 4], "data": [1] * 4}]}
    )
    assert status == 400 and "[N, 3]" in message
    assert oip_error(node, "/v2/models/fraud.score/infer", {"inputs": [{**x, "shape": [2, 3]}]})[0] == 400
    assert oip_error(node, "/v2/models/fraud.score/infer", {"inputs": [{**x, "datatype": "FP99"}]})[0] == 400
    bad_text = {**x, "datatype": "BYTES", "data": ["1", "x", "2"]}
    status, message = oip_error(node, "/v2/models/fraud.score/infer", {"inputs": [bad_text]})
    assert status == 400 and "hour" in message
    assert (
        oip_error(node, "/v2/models/fraud.score/infer", {"inputs": [{**x, "name": "other", "shape": [1, 1]}, x]})[0]
        == 400
    )
    with pytest.raises(InferenceServerException) as err:
        client(node).infer("fraud.score", [matrix(np.zeros((2, 2)), "FP64")])
    assert err.value.status() == "400"


def test_api_key(node: Served) -> None:
    x = {"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 0.5]}
    status, message = oip_error(node, "/v2/models/guarded.score/infer", {"inputs": [x]})
    assert status == 401 and "API key" in message
    assert oip_error(node, "/v2/models/guarded.score")[0] == 401
    wrong = {"Authorization": "Bearer nope"}
    assert oip_error(node, "/v2/models/guarded.score/infer", {"inputs": [x]}, wrong)[0] == 401
    c = client(node)
    ok = c.infer("guarded.score", [matrix(node.fraud_x(1), "FP64")], headers={"Authorization": f"Bearer {KEY}"})
    assert ok.as_numpy("label").shape == (1,)
    metrics = requests.get(node.node.http + "/metrics", timeout=10).text
    assert 'protocol="oip-http"' in metrics


def test_limits_apply(tmp_path: Path) -> None:
    from tests.inproc import run_node
    from tests.packages import logistic_package

    pkg, _ = logistic_package(tmp_path)
    with run_node(tmp_path / "data", pkg, args=["--max-items", "3"]) as n:
        body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [4, 3], "data": [0.5, 1, 2] * 4}]}
        r = requests.post(n.http + "/v2/models/fraud.score/infer", json=body, timeout=30)
        assert r.status_code == 413 and "--max-items" in r.json()["error"]
