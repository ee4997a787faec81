"""`type: sql` endpoints in service.yaml, and the bundled SQLite database the compiler builds."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from apz.archive import read_manifest
from compiler import compile_service
from compiler.errors import CompileError
from compiler.spec import SqlEndpoint, read_service
from tests.compiler.helpers import Package

CUSTOMERS = (
    "customer_id,age,score,name,vip,since\n7,41,0.5,Ann,true,2024-01-02 10:00:00\n8,,1.5,,false,2023-05-06 00:00:00\n"
)
SERVICE = """\
service: crm
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  by_id:
    type: sql
    database: bundled
    statements:
      - SELECT customer_id, age, name FROM customers WHERE customer_id = :customer_id
    test_queries: [{customer_id: 7}]
  remote:
    type: sql
    connection: crm_db
    statements:
      - UPDATE accounts SET seen = now() WHERE id = :id
      - SELECT count(*) FROM accounts WHERE id = :id
"""


def folder(tmp_path: Path, text: str = SERVICE) -> Path:
    f = tmp_path / "crm"
    (f / "data").mkdir(parents=True, exist_ok=True)
    (f / "data" / "customers.csv").write_text(CUSTOMERS)
    (f / "service.yaml").write_text(textwrap.dedent(text))
    return f


def error(tmp_path: Path, text: str, *, build: bool = False) -> str:
    with pytest.raises(CompileError) as info:
        if build:
            compile_service(folder(tmp_path, text), tmp_path / "out.apz", progress=False)
        else:
            read_service(folder(tmp_path, text))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_spec_reads_both_kinds(tmp_path: Path) -> None:
    spec = read_service(folder(tmp_path))
    by_id, remote = spec.endpoints["by_id"], spec.endpoints["remote"]
    assert isinstance(by_id, SqlEndpoint) and isinstance(remote, SqlEndpoint)
    assert (by_id.database, by_id.connection, by_id.test_queries) == ("bundled", None, [{"customer_id": 7}])
    assert (remote.database, remote.connection, len(remote.statements)) == (None, "crm_db", 2)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    database: bundled\n", "", "line 7: endpoints.by_id: an sql endpoint needs exactly one of"),
        (
            "    database: bundled\n",
            "    database: bundled\n    connection: x\n",
            "line 8: endpoints.by_id: an sql endpoint needs exactly one of",
        ),
        ("database: bundled", "database: main.db", "line 8: endpoints.by_id.database: must be 'bundled'"),
        ("connection: crm_db", "connection: 'postgresql://u:pw@h/db'", "not a DSN"),
        ("connection: crm_db", "connection: 'crm db'", "endpoints.remote.connection: must match"),
        (
            "    statements:\n      - SELECT customer_id",
            "    statements: []\n    x: SELECT customer_id",
            "unknown key 'x'",
        ),
        (
            "      - UPDATE accounts",
            "      - 7\n      - UPDATE accounts",
            "statements[0]: expected an SQL statement, got 7",
        ),
        ("= :customer_id", "= ':customer_id", "statements[0]: unterminated string literal at character 66"),
        ("[{customer_id: 7}]", "[{id: 7}]", "line 11: endpoints.by_id.test_queries[0]: lacks customer_id"),
        ("[{customer_id: 7}]", "[{customer_id: 7, x: 1}]", "test_queries[0]: has unknown x"),
        (
            "    type: sql\n    database",
            "    type: sql\n    pol: {}\n    database",
            "known keys: type, database, connection, statements",
        ),
        (
            "datasets:\n  customers: data/customers.csv\n",
            "",
            "endpoints.by_id.database: 'bundled' builds a database from 'datasets:'",
        ),
    ],
)
def test_spec_mistakes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in SERVICE
    message = error(tmp_path, SERVICE.replace(old, new, 1))
    assert expected in message, message
    assert "pw@" not in message


def test_bundled_database_is_typed_and_the_manifest_names_it(tmp_path: Path) -> None:
    report = compile_service(folder(tmp_path), tmp_path / "crm.apz", progress=False)
    pkg = Package(report.out)
    eps = pkg.manifest["endpoints"]
    assert eps["by_id"] == {
        "type": "sql",
        "database": "sqlite/crm.db",
        "statements": ["SELECT customer_id, age, name FROM customers WHERE customer_id = :customer_id"],
        "test_queries": "tests/by_id.json",
    }
    assert eps["remote"]["connection"] == "crm_db" and "database" not in eps["remote"]
    assert read_manifest(report.out).endpoints["remote"].type == "sql"  # the node's own parser
    db_file = tmp_path / "crm.db"
    db_file.write_bytes(pkg.members["sqlite/crm.db"])
    db = sqlite3.connect(db_file)
    types = {r[1]: r[2] for r in db.execute("PRAGMA table_info(customers)")}
    assert types == {
        "customer_id": "INTEGER",
        "age": "INTEGER",  # blank in one row: still an integer column
        "score": "REAL",
        "name": "TEXT",
        "vip": "INTEGER",
        "since": "TEXT",
    }
    rows = db.execute("SELECT customer_id, age, score, name, vip, since FROM customers ORDER BY 1").fetchall()
    assert rows == [(7, 41, 0.5, "Ann", 1, "2024-01-02 10:00:00"), (8, None, 1.5, None, 0, "2023-05-06 00:00:00")]
    assert [type(v) for v in rows[0][:2]] == [int, int]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT nope FROM customers", "statements[0]: no such column: nope"),
        ("SELECT * FROM orders", "no such table: orders"),
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM customers WHERE age = ?", "?, @name and $name placeholders are not supported"),
        ("UPDATE customers SET age = 1", "the bundled database is read-only"),
        ("DELETE FROM customers", "the bundled database is read-only"),
    ],
)
def test_bundled_statements_are_checked_at_compile_time(tmp_path: Path, statement: str, expected: str) -> None:
    text = SERVICE.replace(
        "SELECT customer_id, age, name FROM customers WHERE customer_id = :customer_id", statement
    ).replace("    test_queries: [{customer_id: 7}]\n", "")
    message = error(tmp_path, text, build=True)
    assert "service.yaml: line 9: endpoints.by_id.statements[0]" in message
    assert expected in message, message
