"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), called with
Triton's own `tritonclient.grpc` and its generated stubs on a live node: scikit-learn's
answers, typed and raw tensors, streams, versions, error codes and API keys.

This module imports tritonclient's stubs, never the node's: both declare the proto package
`inference`, and one process cannot hold both.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg
from tritonclient.utils import InferenceServerException

from tests.oip_node import KEY, Served, served


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("oip-grpc")) as s:
        yield s


def client(s: Served) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(s.node.grpc)


def matrix(x: np.ndarray[Any, Any], datatype: str) -> tg.InferInput:
    t = tg.InferInput("input", list(x.shape), datatype)
    t.set_data_from_numpy(x)
    return t


def texts(a: Any) -> list[str]:
    return [v.decode() for v in a]


def test_server_and_model_metadata(node: Served) -> None:
    c = client(node)
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata().name == "apinode"
    assert c.is_model_ready("fraud.score") and c.is_model_ready("fraud.score", "v1")
    meta = c.get_model_metadata("fraud.score", as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": ["-1", "3"]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert sorted(meta["versions"]) == ["v1", "v2"]
    shop = c.get_model_metadata("shop.score")
    assert [(i.name, i.datatype) for i in shop.inputs][-1] == ("merchant_category", "BYTES")
    config = c.get_model_config("fraud.score").config
    assert config.max_batch_size > 0 and list(config.input[0].dims) == [3]
    names = {(m.name, m.version) for m in c.get_model_repository_index().models}
    assert ("rent.score", "v1") in names and ("fraud.score", "v1") in names


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64", "BYTES"])
def test_raw_matrix_infer_equals_scikit_learn(node: Served, datatype: str) -> None:
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
    r = client(node).infer("fraud.score", [matrix(sent, datatype)], request_id="g1")
    assert r.get_response().id == "g1" and r.get_response().model_version == "v2"
    assert texts(r.as_numpy("label")) == node.fraud.predict(seen).tolist()
    np.testing.assert_allclose(r.as_numpy("probabilities"), node.fraud.predict_proba(seen), atol=1e-6)


def test_typed_contents_per_feature(node: Served) -> None:
    """Tensors in InferTensorContents (not raw), one per feature, with a string category."""
    df = node.held_out
    inputs = [
        pb.ModelInferRequest.InferInputTensor(
            name=c, datatype="FP64", shape=[len(df), 1], contents=pb.InferTensorContents(fp64_contents=df[c].tolist())
        )
        for c in ("amount", "hour", "distance")
    ]
    inputs.append(
        pb.ModelInferRequest.InferInputTensor(
            name="merchant_category",
            datatype="BYTES",
            shape=[len(df)],
            contents=pb.InferTensorContents(bytes_contents=[v.encode() for v in df["merchant_category"]]),
        )
    )
    with grpc.insecure_channel(node.node.grpc) as ch:
        raw = pbg.GRPCInferenceServiceStub(ch).ModelInfer(pb.ModelInferRequest(model_name="shop.score", inputs=inputs))
    r = tg.InferResult(raw)
    assert texts(r.as_numpy("label")) == node.shop.predict(df).tolist()
    np.testing.assert_allclose(r.as_numpy("probabilities"), node.shop.predict_proba(df), atol=1e-4)


def test_regression(node: Served) -> None:
    df = node.held_out.head(7)
    inputs = []
    for c in ("amount", "hour", "distance"):
        t = tg.InferInput(c, [len(df)], "FP64")
        t.set_data_from_numpy(df[c].to_numpy(dtype=np.float64))
        inputs.append(t)
    cat = tg.InferInput("merchant_category", [len(df)], "BYTES")
    cat.set_data_from_numpy(df["merchant_category"].to_numpy(dtype=object))
    r = client(node).infer("rent.score", [*inputs, cat], outputs=[tg.InferRequestedOutput("prediction")])
    np.testing.assert_allclose(r.as_numpy("prediction"), node.rent.predict(df), rtol=1e-4)


def test_stream_infer(node: Served) -> None:
    results: queue.Queue[Any] = queue.Queue()
    c = client(node)
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    x = node.fraud_x(3)
    try:
        c.async_stream_infer("fraud.score", [matrix(x, "FP64")], request_id="s1")
        c.async_stream_infer("fraud.score", [matrix(np.zeros((1, 2)), "FP64")], request_id="s2")
        c.async_stream_infer("fraud.score", [matrix(x, "FP64")], request_id="s3", model_version="v1")
        got = [results.get(timeout=30) for _ in range(3)]
    finally:
        c.stop_stream()
    (r1, e1), (r2, e2), (r3, e3) = got
    assert e1 is None and texts(r1.as_numpy("label")) == node.fraud.predict(x).tolist()
    assert r2 is None and "[N, 3]" in e2.message()
    assert e3 is None and r3.get_response().model_version == "v1"


def test_versions_and_statistics(node: Served) -> None:
    c = client(node)
    r = c.infer("fraud.score", [matrix(node.fraud_x(2), "FP64")], model_version="v1")
    assert r.get_response().model_version == "v1"
    with pytest.raises(InferenceServerException) as err:
        c.get_model_metadata("fraud.score", "v9")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    stats = c.get_inference_statistics("fraud.score", "v1").model_stats[0]
    assert stats.inference_count >= 2 and stats.inference_stats.success.count >= 1


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(InferenceServerException) as err:
        call()
    return {str(c): c for c in grpc.StatusCode}[err.value.status()]


def test_errors(node: Served) -> None:
    c = client(node)
    x = matrix(node.fraud_x(1), "FP64")
    assert code_of(lambda: c.infer("nope.score", [x])) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: c.get_model_metadata("noname")) == grpc.StatusCode.NOT_FOUND
    assert (
        code_of(lambda: c.infer("fraud.score", [matrix(np.zeros((2, 4)), "FP64")])) == grpc.StatusCode.INVALID_ARGUMENT
    )
    strings = np.array([[b"1", b"x", b"2"]], dtype=object)
    assert code_of(lambda: c.infer("fraud.score", [matrix(strings, "BYTES")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: c.infer("guarded.score", [x])) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: c.get_model_metadata("guarded.score")) == grpc.StatusCode.UNAUTHENTICATED
    wrong = {"authorization": "Bearer nope"}
    assert code_of(lambda: c.infer("guarded.score", [x], headers=wrong)) == grpc.StatusCode.UNAUTHENTICATED
    ok = c.infer("guarded.score", [x], headers={"authorization": f"Bearer {KEY}"})
    assert ok.as_numpy("label").shape == (1,)
    # a raw tensor whose size does not match its shape and datatype
    bad = pb.ModelInferRequest(
        model_name="fraud.score",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, 3])],
        raw_input_contents=[b"\0" * 16],
    )
    with grpc.insecure_channel(node.node.grpc) as ch, pytest.raises(grpc.RpcError) as err:
        pbg.GRPCInferenceServiceStub(ch).ModelInfer(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "24 bytes" in err.value.details()


def test_wire_compatible_with_triton(tmp_path: Path) -> None:
    """Every message and field of the node's proto has Triton's number and type."""
    import json
    import subprocess
    import sys

    dump = """
import json, sys, importlib
out = {}
def walk(m):
    out[m.full_name] = {f.name: [f.number, f.type, f.is_repeated] for f in m.fields}
    for n in m.nested_types:
        walk(n)
for name in sys.argv[1:]:
    mod = importlib.import_module(name)
    for m in mod.DESCRIPTOR.message_types_by_name.values():
        walk(m)
    for s in mod.DESCRIPTOR.services_by_name.values():
        out[s.full_name] = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in s.methods}
print(json.dumps(out))
"""

    def descriptors(*modules: str) -> dict[str, Any]:
        run = subprocess.run([sys.executable, "-c", dump, *modules], capture_output=True, text=True, check=True)
        return json.loads(run.stdout)  # type: ignore[no-any-return]

    ours = descriptors("node._proto.inference.grpc_service_pb2", "node._proto.inference.model_config_pb2")
    theirs = descriptors("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")
    assert len(ours) > 30
    for message, fields in ours.items():
        for field, shape in fields.items():
            assert theirs[message][field] == shape, (message, field)
