"""Mappings set through the CLI: a 90/10 random split, sticky hash dispatch, and the 400
of a hash mapping without a dispatch key (JSON body, run headers, gRPC)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest
import requests

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc
from tests.deployer.conftest import deploy, deploy_json, ok, prediction_package
from tests.nodeproc import NodeProc

N = 1000


def test_random_split_90_10(node: NodeProc, packages: dict[str, Path]) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    pushed = deploy_json("push", packages["v2"], "--node", node.grpc, "--mapping", "v1=0.9,v2=0.1")
    assert pushed["state"]["mapping"] == {
        "mode": "random",
        "entries": [{"generation": "v1", "proba": 0.9}, {"generation": "v2", "proba": 0.1}],
    }
    counts: Counter[str] = Counter()
    with requests.Session() as s:
        for _ in range(N):
            body = s.post(node.url("svc", "ver", "run"), json={}, timeout=30).json()
            gen = body["apiContext"]["serviceGeneration"]
            assert body["response"]["version"] == gen
            counts[gen] += 1
    assert set(counts) == {"v1", "v2"}
    assert abs(counts["v2"] / N - 0.10) <= 0.035, counts
    listing = deploy_json("list", "--node", node.grpc)["services"][0]
    shares = {g["generation"]: g["share"] for g in listing["generations"]}
    assert shares == {"v1": 0.9, "v2": 0.1}


def test_hash_dispatch_is_sticky(node: NodeProc, packages: dict[str, Path]) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    ok(deploy("push", packages["v2"], "--node", node.grpc))
    state = deploy_json("mapping", "svc", "v1=0.9,v2=0.1", "--hash", "--node", node.grpc)
    assert state["mapping"]["mode"] == "hash"

    keys = [f"customer-{i}" for i in range(300)]
    first: dict[str, str] = {}
    with requests.Session() as s:
        for _ in range(3):
            for key in keys:
                r = s.post(node.url("svc", "ver", "run"), json={}, headers={"X-Dispatch-Key": key}, timeout=30)
                assert r.status_code == 200, r.text
                gen = r.json()["apiContext"]["serviceGeneration"]
                assert first.setdefault(key, gen) == gen, f"{key} moved from {first[key]} to {gen}"
    share = sum(g == "v2" for g in first.values()) / len(keys)
    assert 0.04 <= share <= 0.16, share

    # the same key lands on the same generation over gRPC
    with grpc.insecure_channel(node.grpc) as ch:
        stub = apinode_pb2_grpc.ApiNodeStub(ch)
        for key in keys[:40]:
            reply = stub.Run(
                pb.RunRequest(service="svc", endpoint="ver", dispatch=pb.Dispatch(dispatch_key=key)), timeout=30
            )
            assert reply.api_context.service_generation == first[key]
        with pytest.raises(grpc.RpcError) as exc:
            stub.Run(pb.RunRequest(service="svc", endpoint="ver"), timeout=30)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs dispatch.dispatch_key (the request's Dispatch field)" in (exc.value.details() or "")

    # each caller is told what it must send: `run` takes the key in a header, not in its body
    r = requests.post(node.url("svc", "ver", "run"), json={}, timeout=30)
    assert r.status_code == 400 and r.json()["errorType"] == "BAD_REQUEST"
    assert "the request needs the header X-Dispatch-Key" in r.json()["message"]
    assert "dispatchKey" not in r.json()["message"]


def test_hash_dispatch_in_the_json_body(node: NodeProc, tmp_path: Path) -> None:
    """Prediction endpoints carry `dispatch: {"dispatchKey": ...}` in the body."""
    v1 = prediction_package(tmp_path, "p1", 100.0)
    v2 = prediction_package(tmp_path, "p2", 200.0)
    ok(deploy("push", v1, "--node", node.grpc, "--activate"))
    pushed = deploy_json("push", v2, "--node", node.grpc, "--mapping", "p1=0.5,p2=0.5", "--hash")
    assert pushed["state"]["mapping"]["mode"] == "hash"
    url = node.url("pred", "score", "predict")
    offsets = {"p1": 100.0, "p2": 200.0}
    seen: dict[str, str] = {}
    with requests.Session() as s:
        for _ in range(2):
            for i in range(100):
                body = {"features": {"x": 1.0}, "dispatch": {"dispatchKey": f"k{i}"}}
                out = s.post(url, json=body, timeout=30).json()
                gen = out["apiContext"]["serviceGeneration"]
                assert out["result"]["prediction"] == pytest.approx(1.0 + offsets[gen])
                assert seen.setdefault(f"k{i}", gen) == gen
        assert set(seen.values()) == {"p1", "p2"}
        r = s.post(url, json={"features": {"x": 1.0}}, timeout=30)
        assert r.status_code == 400 and '"dispatch": {"dispatchKey": ...} in the body' in r.json()["message"]
        forced = s.post(url, json={"features": {"x": 1.0}, "dispatch": {"forcedGeneration": "p2"}}, timeout=30)
        assert forced.json()["apiContext"]["serviceGeneration"] == "p2"
    # `deploy test` plays the prediction test queries (over gRPC Predict), pinned to p2
    out = deploy_json("test", v2, "--node", node.grpc, "--generation", "p2")
    assert out["ok"] and out["results"][0]["generation"] == "p2"
    assert out["results"][0]["response"]["result"]["prediction"] == pytest.approx(201.0)
