"""SQL query endpoints on a real node: the bundled SQLite database (compiled from datasets)
and a PostgreSQL database referenced by a connection name (a private server, tests/pg.py),
through the Dataiku client, plain HTTP and gRPC."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import pytest
import requests

from apz.archive import write_package
from compiler import compile_service
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import NodeProc, run_node, start_node
from tests.pg import PASSWORD, PgServer

POOL = {"floor": 1, "cruise": 1, "ceil": 1}
CUSTOMERS = 'customer_id,age,name,score\n7,41,Ann,0.5\n8,,Bob,1.25\n9,30,"{""x"": 1}",2.0\n'
BUNDLED = """\
service: shop
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  by_id:
    type: sql
    database: bundled
    statements: ["SELECT customer_id, age, name, score FROM customers WHERE customer_id = :customer_id"]
    test_queries: [{customer_id: 7}]
    pool: {floor: 1, cruise: 1, ceil: 1}
  by_name:
    type: sql
    database: bundled
    statements: ["SELECT customer_id FROM customers WHERE name = :name"]
    pool: {floor: 1, cruise: 1, ceil: 1}
  count:
    type: sql
    database: bundled
    statements: ["SELECT count(*) AS n, 'a:b' AS literal FROM customers -- :not_a_parameter"]
    pool: {floor: 1, cruise: 1, ceil: 1}
  json_field:
    type: sql
    database: bundled
    statements: ["SELECT json_extract(name, '$.x') AS x FROM customers WHERE customer_id = :customer_id"]
    pool: {floor: 1, cruise: 1, ceil: 1}
"""


def client(node: NodeProc, service: str) -> dataikuapi.APINodeClient:
    return dataikuapi.APINodeClient(node.http + "/", service)


def post(node: NodeProc, service: str, endpoint: str, body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(node.url(service, endpoint, "query"), data=data, timeout=30)


def grpc_query(node: NodeProc, service: str, endpoint: str, **params: pb.Value) -> pb.QueryResponse:
    with grpc.insecure_channel(node.grpc) as ch:
        return pbg.ApiNodeStub(ch).Query(pb.QueryRequest(service=service, endpoint=endpoint, parameters=params))


def grpc_error(node: NodeProc, service: str, endpoint: str, **params: pb.Value) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        grpc_query(node, service, endpoint, **params)
    return info.value


def cells(row: pb.Row) -> list[Any]:
    return [getattr(v, v.WhichOneof("kind")) if v.WhichOneof("kind") != "null" else None for v in row.values]


# ---- bundled SQLite ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    tmp = tmp_path_factory.mktemp("sql-bundled")
    folder = tmp / "shop"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "customers.csv").write_text(CUSTOMERS)
    (folder / "service.yaml").write_text(BUNDLED)
    pkg = compile_service(folder, tmp / "shop.apz", progress=False).out
    with run_node(tmp / "data", pkg, args=["--query-log", str(tmp / "querylog")]) as node:
        yield node


def test_bundled_select_through_the_dataiku_client(shop: NodeProc) -> None:
    out = client(shop, "shop").sql_query("by_id", {"customer_id": 7})
    assert out["columns"] == ["customer_id", "age", "name", "score"]
    assert out["rows"] == [[7, 41, "Ann", 0.5]]
    assert out["apiContext"] == {"serviceId": "shop", "endpointId": "by_id", "serviceGeneration": "v1"}
    assert set(out["timing"]) == {"wait", "execution"}
    assert client(shop, "shop").sql_query("by_id", {"customer_id": 8})["rows"] == [[8, None, "Bob", 1.25]]
    assert client(shop, "shop").sql_query("by_id", {"customer_id": 1})["rows"] == []


def test_bundled_select_over_grpc(shop: NodeProc) -> None:
    out = grpc_query(shop, "shop", "by_id", customer_id=pb.Value(integer=8))
    assert list(out.columns) == ["customer_id", "age", "name", "score"]
    assert [cells(r) for r in out.rows] == [[8, None, "Bob", 1.25]]
    assert [v.WhichOneof("kind") for v in out.rows[0].values] == ["integer", "null", "text", "number"]
    assert not out.HasField("updated_rows")
    assert out.api_context.endpoint_id == "by_id" and out.timing["execution"] > 0


def test_no_parameters_and_an_empty_body(shop: NodeProc) -> None:
    for body in (b"", b"{}"):
        r = post(shop, "shop", "count", body)
        assert r.status_code == 200, r.text
        assert (r.json()["columns"], r.json()["rows"]) == (["n", "literal"], [[3, "a:b"]])
    assert client(shop, "shop").sql_query("count", {})["rows"] == [[3, "a:b"]]
    assert [cells(r) for r in grpc_query(shop, "shop", "count").rows] == [[3, "a:b"]]


def test_parameters_are_bound_never_formatted(shop: NodeProc) -> None:
    for attack in ("1; DROP TABLE customers", "' OR '1'='1", "Ann' --"):
        assert client(shop, "shop").sql_query("by_name", {"name": attack})["rows"] == []
    assert client(shop, "shop").sql_query("by_name", {"name": "Ann"})["rows"] == [[7]]
    assert client(shop, "shop").sql_query("count", {})["rows"][0][0] == 3


def test_wrong_parameters_are_400_naming_them(shop: NodeProc) -> None:
    r = post(shop, "shop", "by_id", {})
    assert r.status_code == 400
    assert r.json()["errorType"] == "BAD_REQUEST"
    assert r.json()["message"] == "missing parameter 'customer_id' (the statements take: customer_id)"
    r = post(shop, "shop", "by_id", {"customer_id": 7, "limit": 3})
    assert (r.status_code, r.json()["errorType"]) == (400, "BAD_REQUEST")
    assert "unexpected parameter 'limit'" in r.json()["message"]
    r = post(shop, "shop", "count", {"x": 1})
    assert "unexpected parameter 'x' (the statements take: no parameters)" in r.json()["message"]
    r = post(shop, "shop", "by_id", {"customer_id": [7, 8]})
    assert r.status_code == 400 and "must be a string, a number, a boolean or null" in r.json()["message"]
    with pytest.raises(dataikuapi.utils.DataikuException, match="BAD_REQUEST: missing parameter 'customer_id'"):
        client(shop, "shop").sql_query("by_id", {})
    err = grpc_error(shop, "shop", "by_id", id=pb.Value(integer=7))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing parameter 'customer_id'" in (err.details() or "")


def test_sql_error_at_run_time(shop: NodeProc) -> None:
    r = post(shop, "shop", "json_field", {"customer_id": 7})  # 'Ann' is not JSON
    assert r.status_code == 500
    assert r.json()["errorType"] == "SQL_ERROR" and "malformed JSON" in r.json()["message"]
    assert client(shop, "shop").sql_query("json_field", {"customer_id": 9})["rows"] == [[1]]
    err = grpc_error(shop, "shop", "json_field", customer_id=pb.Value(integer=7))
    assert err.code() == grpc.StatusCode.INTERNAL and "malformed JSON" in (err.details() or "")


def test_other_verbs_and_kinds_do_not_mix(shop: NodeProc) -> None:
    r = requests.post(shop.url("shop", "by_id", "predict"), json={"features": {}}, timeout=10)
    assert r.status_code == 400 and "is a sql endpoint, not a prediction" in r.json()["message"]


# ---- PostgreSQL, referenced by connection name -----------------------------------------------
PG_ENDPOINTS: dict[str, Any] = {
    "get": ["SELECT id, name, balance, created, tags, doc FROM accounts WHERE id = :id"],
    "rename": ["UPDATE accounts SET name = :name WHERE id = :id"],
    "add": ["INSERT INTO accounts (id, name, balance) VALUES (:id, :name, 0)"],
    "transfer": [
        "UPDATE accounts SET balance = balance - :amount WHERE id = :src",
        "UPDATE accounts SET balance = balance + :amount WHERE id = :dst",
        "SELECT id, balance FROM accounts WHERE id IN (:src, :dst) ORDER BY id",
    ],
    "count": ["SELECT count(*) AS n, sum(balance) AS total FROM accounts /* :no */"],
    "cast": ["SELECT :v::int + 1 AS x, '::' || :s AS s"],
    "broken": ["SELECT * FROM no_such_table WHERE id = :id"],
}


def sql_package(out: Path, endpoints: dict[str, Any], connection: str, *, service: str = "bank") -> Path:
    manifest: dict[str, Any] = {"service": service, "version": "v1", "endpoints": {}}
    files: dict[str, bytes | Path] = {}
    for eid, statements in endpoints.items():
        manifest["endpoints"][eid] = {"type": "sql", "connection": connection, "statements": statements, "pool": POOL}
    manifest["endpoints"]["add"] = {**manifest["endpoints"].get("add", {}), "test_queries": "tests/add.json"}
    if "add" in endpoints:
        files["tests/add.json"] = json.dumps([{"id": 999, "name": "test query"}]).encode()
    else:
        del manifest["endpoints"]["add"]
    path = out / f"{service}.apz"
    write_package(path, manifest, files)
    return path


@pytest.fixture(scope="module")
def bank(postgres: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, PgServer]]:
    postgres.execute("DROP TABLE IF EXISTS accounts")
    postgres.execute(
        textwrap.dedent("""\
        CREATE TABLE accounts (
            id integer PRIMARY KEY, name text NOT NULL, balance numeric(10, 2) CHECK (balance >= 0),
            created date DEFAULT '2024-03-01', tags text[] DEFAULT '{a,b}', doc jsonb DEFAULT '{"k": [1]}'
        )""")
    )
    postgres.execute("INSERT INTO accounts (id, name, balance) VALUES (1, 'Ann', 100.50), (2, 'Bob', 10)")
    tmp = tmp_path_factory.mktemp("sql-pg")
    pkg = sql_package(tmp, PG_ENDPOINTS, "crm")
    connections = tmp / "connections.json"
    connections.write_text(json.dumps({"crm": {"type": "postgresql", "dsn": postgres.dsn}}))
    with run_node(tmp / "data", pkg, args=["--connections", str(connections)]) as node:
        yield node, postgres


def test_postgres_select_and_value_conversions(bank: tuple[NodeProc, PgServer]) -> None:
    node, _ = bank
    out = client(node, "bank").sql_query("get", {"id": 1})
    assert out["columns"] == ["id", "name", "balance", "created", "tags", "doc"]
    assert out["rows"] == [[1, "Ann", 100.5, "2024-03-01", ["a", "b"], {"k": [1]}]]
    assert client(node, "bank").sql_query("get", {"id": "2"})["rows"][0][:3] == [2, "Bob", 10]  # numeric(10,2) 10.00
    g = grpc_query(node, "bank", "get", id=pb.Value(integer=1))
    assert cells(g.rows[0]) == [1, "Ann", 100.5, "2024-03-01", '["a","b"]', '{"k":[1]}']
    out = client(node, "bank").sql_query("cast", {"v": 41, "s": "x"})
    assert (out["columns"], out["rows"]) == (["x", "s"], [[42, "::x"]])


def test_postgres_updates_answer_updated_rows(bank: tuple[NodeProc, PgServer]) -> None:
    node, pg = bank
    out = client(node, "bank").sql_query("rename", {"id": 2, "name": "Robert"})
    assert out["updatedRows"] == 1 and "columns" not in out and "rows" not in out
    assert out["apiContext"] == {"serviceId": "bank", "endpointId": "rename", "serviceGeneration": "v1"}
    assert pg.execute("SELECT name FROM accounts WHERE id = 2") == [("Robert",)]
    assert client(node, "bank").sql_query("rename", {"id": 404, "name": "x"})["updatedRows"] == 0
    r = grpc_query(node, "bank", "add", id=pb.Value(integer=3), name=pb.Value(text="1; DROP TABLE accounts"))
    assert r.HasField("updated_rows") and r.updated_rows == 1 and not r.columns
    assert pg.execute("SELECT name FROM accounts WHERE id = 3") == [("1; DROP TABLE accounts",)]


def test_test_queries_are_rolled_back(bank: tuple[NodeProc, PgServer]) -> None:
    _, pg = bank  # the node played `add` {id: 999} when it loaded the package
    assert pg.execute("SELECT count(*) FROM accounts WHERE id = 999") == [(0,)]


def test_postgres_statements_share_one_transaction(bank: tuple[NodeProc, PgServer]) -> None:
    node, pg = bank
    before = pg.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2) ORDER BY id")
    out = client(node, "bank").sql_query("transfer", {"src": 1, "dst": 2, "amount": 0.5})
    assert out["columns"] == ["id", "balance"]
    assert out["rows"] == [[1, float(before[0][1]) - 0.5], [2, float(before[1][1]) + 0.5]]
    after = pg.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2) ORDER BY id")
    # too much: the first UPDATE breaks the CHECK: nothing at all changes
    r = post(node, "bank", "transfer", {"src": 1, "dst": 2, "amount": 10_000})
    assert (r.status_code, r.json()["errorType"]) == (400, "SQL_BAD_VALUE")
    assert "statement 1: " in r.json()["message"] and "SQLSTATE 23514" in r.json()["message"]
    # the second fails (a value for dst that is not an integer): the first is rolled back
    r = post(node, "bank", "transfer", {"src": 1, "dst": "two", "amount": 1})
    assert (r.status_code, r.json()["errorType"]) == (400, "SQL_BAD_VALUE")
    assert "statement 2: invalid input syntax for type integer" in r.json()["message"]
    assert pg.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2) ORDER BY id") == after


def test_postgres_errors_in_the_api_format(bank: tuple[NodeProc, PgServer]) -> None:
    node, _ = bank
    r = post(node, "bank", "broken", {"id": 1})
    assert r.status_code == 500
    assert r.json()["errorType"] == "SQL_ERROR"
    assert r.json()["message"] == 'relation "no_such_table" does not exist (SQLSTATE 42P01)'
    with pytest.raises(dataikuapi.utils.DataikuException, match="SQL_ERROR: relation"):
        client(node, "bank").sql_query("broken", {"id": 1})
    r = post(node, "bank", "add", {"id": 1, "name": "dup"})
    assert (r.status_code, r.json()["errorType"]) == (400, "SQL_BAD_VALUE")
    assert "duplicate key" in r.json()["message"]
    err = grpc_error(node, "bank", "get", id=pb.Value(text="abc"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid input syntax" in (err.details() or "")
    err = grpc_error(node, "bank", "broken", id=pb.Value(integer=1))
    assert err.code() == grpc.StatusCode.INTERNAL
    r = post(node, "bank", "get", {"id": 1, "x": 2})
    assert (r.status_code, r.json()["message"]) == (400, "unexpected parameter 'x' (the statements take: id)")
    # an empty body is {}: fine for count, a missing parameter for get
    assert post(node, "bank", "count", b"").json()["columns"] == ["n", "total"]
    assert post(node, "bank", "get", b"").json()["message"] == "missing parameter 'id' (the statements take: id)"


def test_a_broken_connection_is_reopened(bank: tuple[NodeProc, PgServer]) -> None:
    node, pg = bank
    assert client(node, "bank").sql_query("get", {"id": 1})["rows"][0][0] == 1
    killed = pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'apinode %'"
    )
    assert len(killed) == len(PG_ENDPOINTS)  # one connection per worker
    assert client(node, "bank").sql_query("get", {"id": 1})["rows"][0][0] == 1
    assert client(node, "bank").sql_query("rename", {"id": 1, "name": "Ann"})["updatedRows"] == 1


def test_dsn_never_in_logs_or_status(bank: tuple[NodeProc, PgServer]) -> None:
    node, _ = bank
    status = requests.get(node.http + "/admin/status", headers=node.admin_headers(), timeout=10).text
    assert PASSWORD not in status and PASSWORD not in node.log()
    assert node.status()["services"]["bank"]["generations"]["v1"]["get"]["type"] == "sql"


def test_unreachable_database_is_503(postgres: PgServer, tmp_path: Path) -> None:
    pkg = sql_package(tmp_path, {"get": PG_ENDPOINTS["get"]}, "down", service="down")
    dsn = f"postgresql://apinode:{PASSWORD}@127.0.0.1:1/apitest"  # nothing listens on port 1
    (tmp_path / "data" / "config").mkdir(parents=True)
    (tmp_path / "data" / "config" / "connections.json").write_text(
        json.dumps({"down": {"type": "postgresql", "dsn": dsn}})
    )
    with run_node(tmp_path / "data", pkg) as node:  # loads: the database may come back
        r = post(node, "down", "get", {"id": 1})
        assert (r.status_code, r.json()["errorType"]) == (503, "DATABASE_UNAVAILABLE")
        assert r.json()["message"].startswith("database 'down': cannot connect: ")
        err = grpc_error(node, "down", "get", id=pb.Value(integer=1))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert PASSWORD not in r.text and PASSWORD not in node.log()


def test_unknown_connection_fails_the_load(tmp_path: Path) -> None:
    pkg = sql_package(tmp_path, {"get": PG_ENDPOINTS["get"]}, "nowhere", service="lost")
    connections = tmp_path / "conns.json"
    connections.write_text(json.dumps({"crm": {"type": "postgresql", "dsn": "postgresql://x@localhost/db"}}))
    with pytest.raises(RuntimeError) as info:
        start_node(tmp_path / "data", pkg, args=["--connections", str(connections)])
    assert (
        f"lost v1 failed to load: endpoint 'get' references the database connection 'nowhere', "
        f"which {connections} does not define (it defines: crm)"
    ) in str(info.value)
    with pytest.raises(RuntimeError) as info:
        start_node(tmp_path / "data2", pkg)
    assert f"there is no connections file {tmp_path / 'data2' / 'config' / 'connections.json'}" in str(info.value)


def test_queries_are_in_the_query_log(shop: NodeProc) -> None:
    client(shop, "shop").sql_query("by_name", {"name": "logged"})
    path = shop.data_dir.parent / "querylog" / "queries.jsonl"

    def logged() -> list[dict[str, Any]]:
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e.get("arguments") == {"name": "logged"}]

    shop.wait_for(lambda: logged(), what="the query log line")
    entry = logged()[0]
    assert (entry["verb"], entry["status"], entry["protocol"]) == ("query", "ok", "http")
    assert entry["result"] == {"columns": ["customer_id"], "rowCount": 0}
