"""Every request limit is an `apinode serve` option, and each one, exceeded, answers an
error of its own that names the limit and its option (README, Configuration)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import requests

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.node.test_hostile_api import FN_CODE, FRAUD_ROW, TAGS_ROW, tags_package
from tests.nodeproc import APINODE, NodeProc, run_node
from tests.packages import function_package, logistic_package

LIMITS = {
    "--max-body-mb": "0.05",  # 52428 bytes
    "--max-grpc-message-mb": "0.05",
    "--max-items": "5",
    "--max-json-depth": "8",
    "--max-string-chars": "100",
}
BODY_LIMIT = int(0.05 * 1024 * 1024)
ONE = {"floor": 1, "cruise": 1, "ceil": 1}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    tmp = tmp_path_factory.mktemp("hostile-limits")
    fraud, _ = logistic_package(tmp)
    tags, _ = tags_package(tmp)
    fn = function_package(tmp, {"echo": {"function": "echo", "pool": ONE}}, service="fn", code=FN_CODE)
    with run_node(tmp / "data", fraud, tags, fn, args=[x for kv in LIMITS.items() for x in kv]) as n:
        yield n


def post(node: NodeProc, path: str, body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(f"{node.http}/public/api/v1/{path}", data=data, timeout=30)


def refused(r: requests.Response, status: int, error_type: str, message: str) -> None:
    assert r.status_code == status, r.text[:300]
    assert r.json()["errorType"] == error_type, r.text[:300]
    assert message in r.json()["message"], r.json()["message"]


def grpc_error(node: NodeProc, call: str, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(node.grpc) as ch, pytest.raises(grpc.RpcError) as err:
        getattr(pbg.ApiNodeStub(ch), call)(request, timeout=30)
    return err.value


def test_body_size(node: NodeProc) -> None:
    r = post(node, "fn/echo/run", {"a": "x" * 90} | {f"k{i}": i for i in range(BODY_LIMIT // 8)})
    refused(
        r, 413, "PAYLOAD_TOO_LARGE", f"the request body is over this node's limit of {BODY_LIMIT} bytes (--max-body-mb)"
    )
    assert post(node, "fn/echo/run", {f"k{i}": i for i in range(1000)}).status_code == 200


def test_grpc_message_size(node: NodeProc) -> None:
    """gRPC refuses the message itself, before the node sees it: RESOURCE_EXHAUSTED."""
    features = {"amount": pb.Value(text="1" * BODY_LIMIT)}
    err = grpc_error(node, "Predict", pb.PredictRequest(service="fraud", endpoint="score", features=features))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert f"vs. {BODY_LIMIT}" in err.details()


def test_items(node: NodeProc) -> None:
    items = [{"features": FRAUD_ROW}] * 6
    message = "6 items in one call; the limit is 5 (--max-items)"
    refused(post(node, "fraud/score/predict-multi", {"items": items}), 413, "PAYLOAD_TOO_LARGE", message)
    assert post(node, "fraud/score/predict-multi", {"items": items[:5]}).status_code == 200
    feats = {k: pb.Value(number=float(v)) for k, v in FRAUD_ROW.items()}
    req = pb.PredictMultiRequest(service="fraud", endpoint="score", items=[pb.PredictItem(features=feats)] * 6)
    err = grpc_error(node, "PredictMulti", req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == message


def test_json_depth(node: NodeProc) -> None:
    nine = b'{"a":' * 9 + b"1" + b"}" * 9
    message = "the JSON body is nested more than 8 levels deep (at a.a.a.a.a.a... (2 more levels)); the limit is 8 (--max-json-depth)"
    refused(post(node, "fn/echo/run", nine), 400, "BAD_REQUEST", message)
    assert post(node, "fn/echo/run", b'{"a":' * 8 + b"1" + b"}" * 8).status_code == 200
    multi = {"items": [{"features": {**FRAUD_ROW, "extra": [[[[[[[1]]]]]]]}}]}  # 9 levels with the body's own
    refused(
        post(node, "fraud/score/predict-multi", multi),
        400,
        "BAD_REQUEST",
        "(at items[0].features.extra[0][0]... (2 more levels))",
    )


def test_string_length(node: NodeProc) -> None:
    long = "m" * 101
    refused(
        post(node, "tags/tag/predict", {"features": {**TAGS_ROW, "merchant": long}}),
        400,
        "BAD_REQUEST",
        "the string at features.merchant is 101 characters long; the limit is 100 (--max-string-chars)",
    )
    assert post(node, "tags/tag/predict", {"features": {**TAGS_ROW, "merchant": long[:100]}}).status_code == 200
    refused(post(node, "fn/echo/run", {"note": long}), 400, "BAD_REQUEST", "the string at note is 101 characters")
    values = {"merchant": pb.Value(text=long), "count": pb.Value(integer=1), "score": pb.Value(number=0.5)}
    err = grpc_error(node, "Predict", pb.PredictRequest(service="tags", endpoint="tag", features=values))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "feature 'merchant' is 101 characters long; the limit is 100 (--max-string-chars)"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-json-depth", "0", "--max-json-depth must be between 1 and 200, got 0"),
        ("--max-json-depth", "500", "--max-json-depth must be between 1 and 200, got 500"),
        ("--max-items", "0", "--max-items must be positive, got 0"),
        ("--max-string-chars", "-1", "--max-string-chars must be positive, got -1"),
        ("--max-body-mb", "0", "--max-body-mb must be positive, got 0.0"),
        ("--max-grpc-message-mb", "4096", "--max-grpc-message-mb must be under 2048, got 4096.0"),
    ],
)
def test_serve_refuses_nonsense_limits(tmp_path: Path, option: str, value: str, message: str) -> None:
    r = subprocess.run(
        [APINODE, "serve", "--data-dir", str(tmp_path / "data"), option, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert f"apinode serve: {message}" in r.stderr


def _raw_post(node: NodeProc, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Sends a request head (and `body`) on a raw socket; returns what the node answered
    within a second of the head, before any body was sent when `body` is empty."""
    host, port = node.http.removeprefix("http://").rsplit(":", 1)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n")
        s.settimeout(5)
        answer = s.recv(65536)
        if body:
            s.sendall(body)
            while b'"apiContext"' not in answer:  # the end of a run answer
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return answer


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/public/api/v1/fn/echo/run", "errorType"), ("/v2/models/fraud.score/infer", "error")],
)
def test_expect_continue_over_the_limit_is_refused_before_the_body(node: NodeProc, path: str, shape: str) -> None:
    answer = _raw_post(
        node,
        path,
        {"Expect": "100-continue", "Content-Length": str(BODY_LIMIT + 1), "Content-Type": "application/json"},
    )
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413 "), answer[:300]  # not "100 Continue"
    doc = orjson.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert f"limit of {BODY_LIMIT} bytes (--max-body-mb)" in doc.get("message", doc.get("error")), doc
    assert shape in doc, doc


def test_expect_continue_within_the_limit_is_invited_and_served(node: NodeProc) -> None:
    body = orjson.dumps({"a": 1})
    answer = _raw_post(
        node,
        "/public/api/v1/fn/echo/run",
        {"Expect": "100-continue", "Content-Length": str(len(body)), "Content-Type": "application/json"},
        body,
    )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), answer[:300]
    assert b"HTTP/1.1 200 OK" in answer, answer[:500]
