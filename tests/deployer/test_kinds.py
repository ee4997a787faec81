"""`apinode deploy status` and `deploy test` on a node serving every endpoint kind: a lookup
(served by the front, no pool), a function and an SQL endpoint. Each test query plays with
its kind's verb (lookup, run, query), over gRPC and over JSON HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deployer.conftest import deploy, deploy_json, ok
from tests.deployer.kinds import kinds_package
from tests.nodeproc import NodeProc, run_node
from tests.pg import start_postgres


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, Path]]:
    tmp = tmp_path_factory.mktemp("kinds")
    pg = start_postgres()
    try:
        pkg = kinds_package(tmp, sql_connection="pg")
        data = tmp / "data"
        (data / "config").mkdir(parents=True)
        (data / "config" / "connections.json").write_text(json.dumps({"pg": {"type": "postgresql", "dsn": pg.dsn}}))
        with run_node(data, pkg) as node:
            yield node, pkg
    finally:
        pg.stop()


def test_status_shows_a_lookup_endpoint(kinds: tuple[NodeProc, Path]) -> None:
    node, _ = kinds
    text = ok(deploy("status", "--node", node.grpc, *node.admin_args())).stdout
    assert "kinds/customer @ v1" in text and "lookup" in text
    doc = deploy_json("status", "--node", node.grpc, *node.admin_args())
    endpoints = {e["endpoint"]: e for e in doc["endpoints"]}
    assert endpoints["customer"]["type"] == "lookup" and endpoints["customer"]["ready"] is True
    assert endpoints["customer"]["workers_idle"] == 0
    assert endpoints["echo"]["type"] == "function" and endpoints["echo"]["workers_idle"] >= 1
    assert doc["ready"] is True


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_deploy_test_plays_each_kind_with_its_verb(kinds: tuple[NodeProc, Path], transport: str) -> None:
    node, pkg = kinds
    where = ["--node", node.grpc] if transport == "grpc" else ["--http", node.http]
    doc = deploy_json("test", pkg, *where)
    assert doc["ok"] is True, doc
    by: dict[tuple[str, int], Any] = {(r["endpoint"], r["index"]): r for r in doc["results"]}
    assert len(by) == 4 and all(r["generation"] == "v1" for r in by.values())
    found = by[("customer", 0)]["response"]["results"]
    assert [r["data"] for r in found] == [{"customer_id": "C1", "age": 34, "country": "FR"}]
    unknown = by[("customer", 1)]["response"]["results"]
    assert len(unknown) == 1 and unknown[0]["ignored"] is True
    assert unknown[0]["ignoreReason"] == "NO_LOOKUP_MATCH"
    assert by[("balance", 0)]["response"] == {"columns": ["next"], "rows": [[42]]}
    assert by[("echo", 0)]["response"] == {"response": {"echo": {"a": 1}}}
