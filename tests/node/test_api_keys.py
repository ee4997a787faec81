"""Service API keys: Basic (the Dataiku client) or Bearer over HTTP, metadata over gRPC."""

from __future__ import annotations

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
from tests.packages import function_package

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
        other = requests.post(url, auth=(BETA, ""))
        assert other.status_code == 403 and other.json()["errorType"] == "FORBIDDEN"
        assert ALPHA not in other.text and BETA not in other.text
        assert requests.post(node.url("public", "e", "run")).status_code == 200
        run_grpc(node, "alpha", ALPHA)
        for key, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (BETA, grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as err:
                run_grpc(node, "alpha", key)
            assert err.value.code() == code
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
