"""The user API over JSON HTTP (with the official Dataiku client) and gRPC, on a real node."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

# Triton's OIP stubs (the node's own build theirs in a descriptor pool of their own)
from tritonclient.grpc import service_pb2 as oip
from tritonclient.grpc import service_pb2_grpc as oipg

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests import nodeproc
from tests.inproc import InProcNode, run_node
from tests.packages import logistic_package


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcNode, Any]]:
    tmp = tmp_path_factory.mktemp("userapi")
    pkg, model = logistic_package(tmp)
    with run_node(tmp / "data", pkg) as node:
        yield node, model


def rows(n: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 3))
    x[:, 1] = np.round(x[:, 1] * 3)  # `hour` is an int feature
    return x


def feats(r: np.ndarray) -> dict[str, Any]:
    return {"amount": float(r[0]), "hour": int(r[1]), "distance": float(r[2])}


def test_dataiku_client_predict_record_and_records(served: tuple[InProcNode, Any]) -> None:
    node, model = served
    client = dataikuapi.APINodeClient(node.http + "/", "fraud")  # trailing slash: the client sends //public
    x = rows(50)
    one = client.predict_record("score", feats(x[0]))
    assert one["result"]["prediction"] == model.predict(x[:1])[0]
    assert one["result"]["probas"]["FRAUD"] == pytest.approx(model.predict_proba(x[:1])[0][0], abs=1e-9)
    assert one["apiContext"] == {"serviceId": "fraud", "endpointId": "score", "serviceGeneration": "v1"}
    assert set(one["timing"]) >= {"preProcessing", "wait", "prediction", "postProcessing"}
    many = client.predict_records("score", [{"features": feats(r)} for r in x])
    assert [r["prediction"] for r in many["results"]] == model.predict(x).tolist()
    got = np.array([[r["probas"]["FRAUD"], r["probas"]["OK"]] for r in many["results"]])
    assert np.abs(got - model.predict_proba(x)).max() < 1e-9


def test_grpc_predict_multi_and_stream(served: tuple[InProcNode, Any]) -> None:
    node, model = served
    x = rows(30, seed=2)

    def values(r: np.ndarray) -> dict[str, pb.Value]:
        return {
            "amount": pb.Value(number=r[0]),
            "hour": pb.Value(integer=int(r[1])),
            "distance": pb.Value(text=str(r[2])),
        }

    with grpc.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        one = stub.Predict(pb.PredictRequest(service="fraud", endpoint="score", features=values(x[0])))
        assert one.result.prediction.text == model.predict(x[:1])[0]
        assert one.api_context.service_generation == "v1"
        multi = stub.PredictMulti(
            pb.PredictMultiRequest(
                service="fraud", endpoint="score", items=[pb.PredictItem(features=values(r)) for r in x]
            )
        )
        assert [r.prediction.text for r in multi.results] == model.predict(x).tolist()

        def requests_() -> Iterator[pb.PredictRequest]:
            for i, r in enumerate(x):
                f = values(r) if i != 5 else {"amount": pb.Value(text="not a number")}
                yield pb.PredictRequest(service="fraud", endpoint="score", features=f, request_id=f"r{i}")

        answers = list(stub.PredictStream(requests_()))
        assert [a.request_id for a in answers] == [f"r{i}" for i in range(len(x))]
        assert answers[5].error.code == "INVALID_ARGUMENT" and "amount" in answers[5].error.message
        expected = model.predict(x).tolist()
        assert all(a.result.prediction.text == expected[i] for i, a in enumerate(answers) if i != 5)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(pb.PredictRequest(service="fraud", endpoint="nope", features=values(x[0])))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        listing = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in listing.list_services_response.service}
        assert "apinode.v1.ApiNode" in names


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"features": {"amount": 1, "hour": 2}}, 400, "'distance' is missing"),
        ({"features": {"amount": "abc", "hour": 2, "distance": 1}}, 400, "'amount' must be a number"),
        ({"features": {"amount": None, "hour": 2, "distance": 1}}, 400, "'amount' is null"),
        ({"features": {"amount": 1, "hour": 2.5, "distance": 1}}, 400, "'hour' must be an integer"),
        ({"features": {"amount": [1], "hour": 2, "distance": 1}}, 400, "'amount' must be a number"),
        ({"features": {"amount": True, "hour": 2, "distance": 1}}, 400, "got a boolean"),
        ({"features": "x"}, 400, "'features' must be a JSON object"),
        ({}, 400, "needs 'features'"),
        ({"items": [{"features": {"amount": 1}}]}, 400, "needs 'features'"),
    ],
)
def test_bad_input_gets_a_clear_400(
    served: tuple[InProcNode, Any], body: dict[str, Any], status: int, needle: str
) -> None:
    node, _ = served
    r = requests.post(node.url("fraud", "score", "predict"), json=body)
    assert r.status_code == status, r.text
    assert r.json()["errorType"] == "BAD_REQUEST" and needle in r.json()["message"], r.text
    assert r.headers["DSS-API-Version"] and r.headers["DSS-Version"]


def test_lenient_input_and_protocol_details(served: tuple[InProcNode, Any]) -> None:
    node, model = served
    url = node.url("fraud", "score", "predict")
    # numeric strings, integers for floats, extra features, no Content-Type header
    body = b'{"features": {"amount": "1.5", "hour": 2, "distance": "-0.25", "extra": "ignored"}}'
    r = requests.post(url, data=body, headers={"Content-Type": ""})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["prediction"] == model.predict([[1.5, 2, -0.25]])[0]
    # an empty body is an empty object; invalid JSON and non-objects are 400
    assert requests.post(url, data=b"").json()["message"].startswith("the body needs 'features'")
    assert requests.post(url, data=b"{nope").json()["errorType"] == "BAD_REQUEST"
    assert "JSON object" in requests.post(url, data=b"[1, 2]").json()["message"]
    r = requests.post(node.url("fraud", "score", "predict-multi"), json={"items": []})
    assert r.status_code == 200 and r.json()["results"] == []
    r = requests.post(node.url("nope", "score", "predict"), json={"features": {}})
    assert r.status_code == 404 and r.json()["errorType"] == "NOT_FOUND"
    r = requests.post(node.url("fraud", "score", "explode"), json={})
    assert r.status_code == 404 and "unknown verb" in r.json()["message"]
    r = requests.get(node.http + "/public/api/v1/fraud/score/predict-simple?amount=1&hour=2&distance=0")
    assert r.status_code == 200 and r.json()["result"]["prediction"] in ("FRAUD", "OK")
    assert requests.get(node.http + "/nothing/here").json()["errorType"] == "NOT_FOUND"


def test_is_alive_follows_the_not_alive_file(served: tuple[InProcNode, Any]) -> None:
    """HTTP /isAlive, gRPC health (both its names) and the Open Inference Protocol's liveness
    (HTTP and gRPC) agree, at once, on the not-alive file."""
    node, _ = served

    def oip_live() -> tuple[int, bool]:
        with grpc.insecure_channel(node.grpc) as ch:
            live = oipg.GRPCInferenceServiceStub(ch).ServerLive(oip.ServerLiveRequest(), timeout=30).live
        return requests.get(node.http + "/v2/health/live").status_code, live

    def grpc_health() -> list[str]:
        with grpc.insecure_channel(node.grpc) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            return [
                health_pb2.HealthCheckResponse.ServingStatus.Name(
                    stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=30).status
                )
                for name in ("", "apinode.v1.ApiNode")
            ]

    assert requests.get(node.http + "/isAlive/").status_code == 200
    assert grpc_health() == ["SERVING", "SERVING"]
    assert oip_live() == (200, True)
    marker = node.data_dir / "apinode-not-alive.txt"
    marker.write_text("draining")
    try:
        r = requests.get(node.http + "/isAlive/")
        assert r.status_code == 503 and r.json() == {"alive": False, "reason": "apinode-not-alive.txt present"}
        assert grpc_health() == ["NOT_SERVING", "NOT_SERVING"]
        assert oip_live() == (503, False)
        assert requests.get(node.http + "/ready").status_code == 200  # readiness is another question
    finally:
        marker.unlink()
    assert requests.get(node.http + "/isAlive").status_code == 200
    assert grpc_health() == ["SERVING", "SERVING"]
    assert oip_live() == (200, True)


def test_a_restarted_node_serves_the_same_services(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path)
    x = rows(5, seed=3)
    with run_node(tmp_path / "data", pkg) as node:
        first = requests.post(
            node.url("fraud", "score", "predict-multi"), json={"items": [{"features": feats(r)} for r in x]}
        )
    with run_node(tmp_path / "data") as node:  # no package on the command line this time
        again = requests.post(
            node.url("fraud", "score", "predict-multi"), json={"items": [{"features": feats(r)} for r in x]}
        )
    assert again.status_code == 200
    assert again.json()["results"] == first.json()["results"]


def test_node_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RuntimeError) as err:
            nodeproc.run_node(tmp_path / "data", args=["--http-port", str(port)]).__enter__()  # the CLI's answer
    assert "address already in use" in str(err.value).lower() or "errno 98" in str(err.value).lower()


def test_metrics_count_outcomes_with_histograms(served: tuple[InProcNode, Any]) -> None:
    node, _ = served
    requests.post(node.url("fraud", "score", "predict"), json={"features": feats(rows(1)[0])})
    requests.post(node.url("fraud", "score", "predict"), json={"features": {}})
    with grpc.insecure_channel(node.grpc) as ch:
        pbg.ApiNodeStub(ch).Predict(
            pb.PredictRequest(
                service="fraud",
                endpoint="score",
                features={"amount": pb.Value(number=1), "hour": pb.Value(integer=1), "distance": pb.Value(number=1)},
            )
        )
    text = requests.get(node.http + "/metrics").text
    ok = 'apinode_requests_total{endpoint="score",generation="v1",outcome="ok",protocol="http",service="fraud"}'
    bad = (
        'apinode_requests_total{endpoint="score",generation="v1",outcome="BAD_REQUEST",protocol="http",service="fraud"}'
    )
    assert ok in text and bad in text
    assert 'protocol="grpc"' in text
    assert "apinode_request_duration_seconds_bucket" in text and "apinode_queue_wait_seconds_bucket" in text
    assert 'apinode_workers{endpoint="score",generation="v1",service="fraud",state="idle"}' in text
    assert 'apinode_queue_depth{endpoint="score",generation="v1",service="fraud"} 0.0' in text


def test_explanations_without_background_and_missing_verbs_are_refused_plainly(
    served: tuple[InProcNode, Any],
) -> None:
    """This package was written without an explanation background (as a compile without a
    sample): explanations are refused, saying why; tests/node/test_explanations.py has the rest."""
    node, model = served
    client = dataikuapi.APINodeClient(node.http, "fraud")
    x = rows(2, seed=5)
    for call in (
        lambda: client.predict_record("score", feats(x[0]), with_explanations=True),
        lambda: client.predict_records("score", [{"features": feats(r)} for r in x], with_explanations=True),
        lambda: client.predict_record("score", feats(x[0]), with_explanations=True, explanation_method="SHAPLEY"),
    ):
        with pytest.raises(
            dataikuapi.utils.DataikuException, match="NOT_SUPPORTED: endpoint 'score' has no explanation background"
        ):
            call()
    r = requests.post(
        node.url("fraud", "score", "predict"), json={"features": feats(x[0]), "explanations": {"enabled": True}}
    )
    assert r.status_code == 400 and r.json()["errorType"] == "NOT_SUPPORTED"
    # not asked (the client's nulls, or false): answered as usual
    one = client.predict_record("score", feats(x[0]), with_explanations=False)
    assert one["result"]["prediction"] == model.predict(x[:1])[0] and "explanations" not in one["result"]
    assert (
        client.predict_records("score", [{"features": feats(r)} for r in x])["results"][1]["prediction"]
        == (model.predict(x[1:2])[0])
    )
    for call, verb in (
        (lambda: client.forecast("score", [{"x": 1}]), "forecast"),
        (lambda: client.predict_effect("score", feats(x[0])), "predict-effect"),
        (lambda: client.predict_effects("score", [{"features": feats(x[0])}]), "predict-effect-multi"),
    ):
        with pytest.raises(dataikuapi.utils.DataikuException, match=f"NOT_SUPPORTED: the verb '{verb}'") as err:
            call()
        assert "not supported by apinode" in str(err.value)
    r = requests.post(node.url("fraud", "score", "forecast"), json={})
    assert r.status_code == 400 and r.json()["errorType"] == "NOT_SUPPORTED"
    assert requests.post(node.url("fraud", "score", "made-up"), json={}).json()["errorType"] == "NOT_FOUND"


def test_a_misspelt_feature_is_named(served: tuple[InProcNode, Any]) -> None:
    node, _ = served
    client = dataikuapi.APINodeClient(node.http, "fraud")
    hint = "feature 'amount' is missing and the model cannot impute it; the request has an unknown feature"
    with pytest.raises(dataikuapi.utils.DataikuException, match=f"{hint} 'amout' \\(a misspelling of 'amount'\\?\\)"):
        client.predict_record("score", {"amout": 1.0, "hour": 2, "distance": 0.5})
    with pytest.raises(dataikuapi.utils.DataikuException, match=f"items\\[1\\]: {hint} 'Amount'"):
        client.predict_records(
            "score",
            [{"features": {"amount": 1.0, "hour": 2, "distance": 0.5}}, {"features": {"Amount": 1.0, "hour": 2}}],
        )
    # nothing close: the plain message
    r = requests.post(node.url("fraud", "score", "predict"), json={"features": {"hour": 2, "distance": 0.5, "zz": 1}})
    assert r.status_code == 400
    assert r.json()["message"] == "feature 'amount' is missing and the model cannot impute it"
    with grpc.insecure_channel(node.grpc) as ch, pytest.raises(grpc.RpcError) as err:
        feats_ = {"amont": pb.Value(number=1.0), "hour": pb.Value(integer=2), "distance": pb.Value(number=0.5)}
        pbg.ApiNodeStub(ch).Predict(pb.PredictRequest(service="fraud", endpoint="score", features=feats_))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown feature 'amont' (a misspelling of 'amount'?)" in (err.value.details() or "")
