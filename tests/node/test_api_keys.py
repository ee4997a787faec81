"""Service API keys: Basic (the Dataiku client) or Bearer over HTTP, metadata over gRPC."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dataikuapi
import grpc
import pytest
import requests
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import NodeProc, run_node
from tests.packages import function_package, logistic_package

ALPHA, BETA = "alpha-secret-123", "beta-secret-456"


def run_grpc(node: NodeProc, service: str, key: str | None) -> None:
    md = [("authorization", f"Bearer {key}")] if key else None
    with grpc.insecure_channel(node.grpc) as ch:
        pbg.ApiNodeStub(ch).Run(
            pb.RunRequest(service=service, endpoint="e", arguments=struct_pb2.Struct()), metadata=md
        )


def test_keys_guard_services(tmp_path: Path) -> None:
    a = function_package(tmp_path, {"e": {"function": "pid"}}, service="alpha", api_keys=[ALPHA])
    b = function_package(tmp_path, {"e": {"function": "pid"}}, service="beta", api_keys=[BETA])
    c = function_package(tmp_path, {"e": {"function": "pid"}}, service="public")
    with run_node(tmp_path / "data", a, b, c) as node:
        assert isinstance(
            dataikuapi.APINodeClient(node.http, "alpha", api_key=ALPHA).run_function("e")["response"], int
        )
        url = node.url("alpha", "e", "run")
        assert requests.post(url, headers={"Authorization": f"Bearer {ALPHA}"}).status_code == 200
        no_key = requests.post(url)
        assert no_key.status_code == 401 and no_key.json()["errorType"] == "UNAUTHORIZED"
        wrong = requests.post(url, auth=("nope", ""))
        assert wrong.status_code == 401
        other = requests.post(url, auth=(BETA, ""))  # a key valid elsewhere looks like any wrong key
        assert other.status_code == 401 and other.json() == wrong.json()
        assert ALPHA not in other.text and BETA not in other.text
        assert requests.post(node.url("public", "e", "run")).status_code == 200
        run_grpc(node, "alpha", ALPHA)
        details = []
        for key in (None, BETA, "nope"):
            with pytest.raises(grpc.RpcError) as err:
                run_grpc(node, "alpha", key)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            details.append(err.value.details())
        assert details[1] == details[2]
        with pytest.raises(dataikuapi.utils.DataikuException):
            dataikuapi.APINodeClient(node.http, "alpha", api_key=BETA).run_function("e")
        status = requests.get(node.http + "/admin/status", headers=node.admin_headers(), timeout=10).text
        log = node.log()
        assert "wrong API key for service alpha from 127.0.0.1" in log
        assert "key of service beta used for service alpha" in log
        for secret in (ALPHA, BETA):
            assert secret not in log and secret not in status
    # the node's own key file overrides the package's keys
    override = tmp_path / "data" / "config" / "services" / "alpha" / "api_keys.json"
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text(json.dumps({"api_keys": [{"id": "ops", "key": "rotated-key"}]}))
    with run_node(tmp_path / "data") as node:
        url = node.url("alpha", "e", "run")
        assert requests.post(url, auth=(ALPHA, "")).status_code == 401
        assert requests.post(url, auth=("rotated-key", "")).status_code == 200


def predict_simple(node: NodeProc, headers: dict[str, str] | None = None) -> requests.Response:
    url = node.url("fraud", "score", "predict-simple") + "?amount=1.5&hour=3&distance=-0.25"
    return requests.get(url, headers=headers, timeout=30)


def test_predict_simple_passes_the_key_on(tmp_path: Path) -> None:
    pkg, model = logistic_package(tmp_path)
    keys = tmp_path / "data" / "config" / "services" / "fraud" / "api_keys.json"
    keys.parent.mkdir(parents=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "ops", "key": ALPHA}]}))
    with run_node(tmp_path / "data", pkg) as node:
        r = predict_simple(node, {"Authorization": f"Bearer {ALPHA}"})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["prediction"] == model.predict([[1.5, 3, -0.25]])[0]
        basic = "Basic " + base64.b64encode(f"{ALPHA}:".encode()).decode()
        assert predict_simple(node, {"Authorization": basic}).status_code == 200
        for headers in (None, {"Authorization": f"Bearer {BETA}"}):
            r = predict_simple(node, headers)
            assert r.status_code == 401 and r.json()["errorType"] == "UNAUTHORIZED"


def test_a_rotated_key_file_applies_without_restart(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid"}}, service="alpha", api_keys=[ALPHA])
    keys = tmp_path / "data" / "config" / "services" / "alpha" / "api_keys.json"
    with run_node(tmp_path / "data", pkg) as node:
        url = node.url("alpha", "e", "run")
        pid = node.proc.pid

        def code(key: str) -> int:
            return requests.post(url, auth=(key, ""), timeout=30).status_code

        assert code(ALPHA) == 200 and code("rotated-1") == 401
        keys.parent.mkdir(parents=True)
        keys.write_text(json.dumps({"api_keys": [{"id": "ops", "key": "rotated-1"}]}))
        node.wait_for(lambda: code("rotated-1") == 200, what="the new key accepted")
        assert code(ALPHA) == 401
        run_grpc(node, "alpha", "rotated-1")
        # rotated again, by an atomic rename (as config management does)
        tmp = keys.with_suffix(".tmp")
        tmp.write_text(json.dumps({"api_keys": [{"id": "ops2", "key": "rotated-2"}]}))
        tmp.replace(keys)
        node.wait_for(lambda: code("rotated-2") == 200, what="the second key accepted")
        assert code("rotated-1") == 401
        # a broken file keeps the keys in force, and says so
        keys.write_text('{"api_keys": [')
        node.wait_for(
            lambda: code("rotated-2") == 200 and "not reloaded" in node.log(), what="the broken file reported"
        )
        assert code("rotated-2") == 200 and code(ALPHA) == 401
        # no file: the package's keys again
        keys.unlink()
        node.wait_for(lambda: code(ALPHA) == 200, what="the package's key back")
        assert code("rotated-2") == 401
        assert node.proc.pid == pid and node.proc.poll() is None
        assert "rotated-" not in node.log()
