"""The query log: one JSON line per query, both protocols, rotated, nothing lost on SIGTERM."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dataikuapi
import grpc
import requests
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import start_node
from tests.packages import function_package, logistic_package


def read_lines(directory: Path) -> list[dict[str, object]]:
    lines = []
    for path in sorted(directory.glob("queries.jsonl*")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def test_every_query_is_logged_and_flushed_on_shutdown(tmp_path: Path) -> None:
    logged = function_package(
        tmp_path,
        {"add": {"function": "add", "pool": {"queue": 200}}},
        service="cards",
        extra={"query_log": {"exclude": ["card_number"]}},
    )
    silent = function_package(
        tmp_path, {"e": {"function": "pid"}}, service="quiet", extra={"query_log": {"sample_rate": 0}}
    )
    logdir = tmp_path / "qlog"
    node = start_node(
        tmp_path / "data", logged, silent, args=["--query-log", str(logdir), "--query-log-max-mb", "0.02"]
    )
    url = node.url("cards", "add", "run")
    with ThreadPoolExecutor(8) as ex:
        codes = list(
            ex.map(lambda i: requests.post(url, json={"a": i, "card_number": "4111-1111"}).status_code, range(300))
        )
    assert codes == [200] * 300
    assert requests.post(url, json={"b": 1}).status_code == 400
    s = struct_pb2.Struct()
    s.update({"a": 1, "card_number": "4111-1111"})
    with grpc.insecure_channel(node.grpc) as ch:
        pbg.ApiNodeStub(ch).Run(pb.RunRequest(service="cards", endpoint="add", arguments=s))
    assert requests.post(node.url("quiet", "e", "run")).status_code == 200
    # the query log's own counter, exported by the node's metrics (0: nothing dropped)
    assert "\napinode_querylog_dropped_total 0.0\n" in requests.get(node.http + "/metrics", timeout=30).text
    assert node.stop() == 0  # SIGTERM: queued lines are written before exit
    lines = read_lines(logdir)
    assert len(lines) == 302, len(lines)
    assert len(list(logdir.glob("queries.jsonl.*"))) >= 1  # rotated by size
    ok = [entry for entry in lines if entry["status"] == "ok"]
    assert len(ok) == 301 and {entry["protocol"] for entry in ok} == {"http", "grpc"}
    sample = ok[0]
    assert sample["service"] == "cards" and sample["endpoint"] == "add" and sample["generation"] == "v1"
    assert all("card_number" not in entry["arguments"] for entry in lines if "arguments" in entry)  # left out
    assert isinstance(sample["response"], dict) and "sum" in sample["response"]
    assert {"time", "timing", "arguments", "peer"} <= set(sample)
    bad = [entry for entry in lines if entry["status"] != "ok"]
    assert bad[0]["status"] == "BAD_REQUEST" and "'a'" in str(bad[0]["error"])
    assert all(entry["service"] != "quiet" for entry in lines)


def test_the_context_of_each_item_is_logged(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path)
    logdir = tmp_path / "qlog"
    node = start_node(tmp_path / "data", pkg, args=["--query-log", str(logdir)])
    row = {"amount": 1.5, "hour": 3, "distance": -0.25}
    client = dataikuapi.APINodeClient(node.http, "fraud")
    client.predict_records("score", [{"features": row, "context": {"user": "u1"}}, {"features": row}])
    client.predict_record("score", row, context={"user": "u0"})
    s = struct_pb2.Struct()
    s.update({"user": "g1"})
    feats = {"amount": pb.Value(number=1.5), "hour": pb.Value(integer=3), "distance": pb.Value(number=-0.25)}
    with grpc.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        stub.PredictMulti(
            pb.PredictMultiRequest(
                service="fraud",
                endpoint="score",
                items=[pb.PredictItem(features=feats), pb.PredictItem(features=feats, context=s)],
            )
        )
        stub.Predict(pb.PredictRequest(service="fraud", endpoint="score", features=feats, context=s))
    assert node.stop() == 0
    lines = read_lines(logdir)
    assert [(e["protocol"], e["verb"]) for e in lines] == [
        ("http", "predict-multi"),
        ("http", "predict"),
        ("grpc", "predict-multi"),
        ("grpc", "predict"),
    ]
    assert lines[0]["itemContexts"] == [{"user": "u1"}, None] and lines[0]["items"] == [row, row]
    assert lines[1]["context"] == {"user": "u0"}
    assert lines[2]["itemContexts"] == [None, {"user": "g1"}]
    assert lines[3]["context"] == {"user": "g1"}
