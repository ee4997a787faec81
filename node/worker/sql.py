"""What an SQL endpoint's worker runs: its statements, on SQLite or PostgreSQL.

One connection per worker, opened at start: the package's bundled SQLite file (read-only
and immutable: a generation's files never change, and every worker of every pool may read
it at once), or the PostgreSQL database of the node's connection (psycopg 3). A
PostgreSQL database that cannot be reached does not stop the worker from loading: each
request tries to connect again, and answers DATABASE_UNAVAILABLE until it can. A
connection found broken (server restarted, idle connection killed) is reopened once and
the transaction replayed, unless it broke while committing.

A request is the parameters dict; every parameter the statements name is required, no
other is accepted, and values are scalars (string, number, boolean, null) bound by the
driver (`$n` / `?n` placeholders, :mod:`apz.sqlparams`), never formatted into SQL. The
statements run in one transaction (rolled back instead of committed for a dry run: test
queries played at deployment write nothing); the answer is the last statement's:
`{"columns", "rows"}` when it returns rows, else `{"updatedRows"}`. Values are made
JSON-safe here (:func:`json_safe`).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import sqlite3
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from apz import sqlparams
from apz.specs import EndpointSpec
from node.worker import protocol as p
from node.worker.protocol import WorkerError

_SCALARS = (str, int, float, bool, type(None))


class SqlRuntime:
    def __init__(self, package_dir: Path, endpoint: EndpointSpec, dsn: str | None) -> None:
        self.endpoint_id = endpoint.id
        if endpoint.sql is None:
            raise WorkerError(p.ERR_INTERNAL, f"endpoint {endpoint.id!r} has no statements")
        sql = endpoint.sql
        self.statements = list(sql.statements)  # parsed when the manifest was read
        self.names = sorted({n for s in self.statements for n in s.names})
        self.connection_name = sql.connection
        self.dsn: str | None = None
        self.sqlite: sqlite3.Connection | None = None
        self.pg: Any = None
        if self.connection_name is None:
            assert sql.database is not None  # the manifest names one of database and connection
            path = package_dir / sql.database
            self.sql = [s.render(sqlparams.sqlite) for s in self.statements]
            try:
                # Opened by the (niced) loading thread, used by the serving thread: one at a time.
                self.sqlite = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro&immutable=1",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise WorkerError(p.ERR_INTERNAL, f"cannot open {sql.database}: {exc}") from None
        else:
            if dsn is None:
                raise WorkerError(p.ERR_INTERNAL, f"no DSN for connection {self.connection_name!r}")
            self.dsn = dsn
            self.sql = [s.render(sqlparams.postgres) for s in self.statements]
            try:
                self._connect()
            except WorkerError as exc:  # the node loads anyway; requests retry
                sys.stderr.write(f"SQL endpoint {self.endpoint_id}: {exc.message}\n")

    # ---- requests ----------------------------------------------------------------------
    def handle(self, op: str, payload: Any) -> Any:
        if op != p.OP_QUERY:
            raise WorkerError(p.ERR_INTERNAL, f"SQL worker cannot {op!r}")
        params, dry_run = payload
        self._check(params)
        if self.sqlite is not None:
            return self._run_sqlite(params, dry_run)
        return self._run_pg(params, dry_run)

    def _check(self, params: dict[str, Any]) -> None:
        takes = f"(the statements take: {', '.join(self.names) or 'no parameters'})"
        missing = [n for n in self.names if n not in params]
        if missing:
            raise WorkerError(p.ERR_BAD_REQUEST, f"missing parameter {_list(missing)} {takes}")
        unexpected = sorted(k for k in params if k not in self.names)
        if unexpected:
            raise WorkerError(p.ERR_BAD_REQUEST, f"unexpected parameter {_list(unexpected)} {takes}")
        for name, value in params.items():
            if not isinstance(value, _SCALARS):
                raise WorkerError(
                    p.ERR_BAD_REQUEST,
                    f"parameter {name!r} must be a string, a number, a boolean or null, not {type(value).__name__}",
                )

    def _run_sqlite(self, params: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        assert self.sqlite is not None
        cur = self.sqlite.cursor()
        i = 0  # statements done: the one that fails is the next
        try:
            cur.execute("BEGIN")
            for sql, stmt in zip(self.sql, self.statements, strict=True):
                cur.execute(sql, stmt.args(params))
                i += 1
            result = _result(cur.description, cur.fetchall, cur.rowcount)
            cur.execute("ROLLBACK" if dry_run else "COMMIT")
            return result
        except (sqlite3.Error, OverflowError) as exc:
            if self.sqlite.in_transaction:
                self.sqlite.execute("ROLLBACK")
            kind = p.ERR_SQL_VALUE if isinstance(exc, sqlite3.IntegrityError | OverflowError) else p.ERR_SQL
            raise WorkerError(kind, f"{self._where(i)}{exc}") from None

    def _run_pg(self, params: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        import psycopg

        for attempt in (1, 2):
            if self.pg is None or self.pg.closed:
                self._connect()
            i = 0
            try:
                with self.pg.cursor() as cur:
                    for sql, stmt in zip(self.sql, self.statements, strict=True):
                        cur.execute(sql, stmt.args(params))
                        i += 1
                    result = _result(cur.description, cur.fetchall, cur.rowcount)
            except psycopg.Error as exc:
                if self.pg.broken:
                    self.pg = None
                    if attempt == 1:
                        continue  # the server rolled the transaction back: replaying it is safe
                    raise WorkerError(p.ERR_UNAVAILABLE, f"{self._label()}: the connection broke: {exc}") from None
                self.pg.rollback()
                raise _pg_error(exc, self._where(i)) from None
            try:
                if dry_run:
                    self.pg.rollback()
                else:
                    self.pg.commit()
            except psycopg.Error as exc:
                if self.pg.broken:  # the commit may or may not have happened: never replayed
                    self.pg = None
                    raise WorkerError(
                        p.ERR_UNAVAILABLE, f"{self._label()}: the connection broke while committing: {exc}"
                    ) from None
                self.pg.rollback()
                raise _pg_error(exc, "commit: ") from None
            return result
        raise AssertionError("unreachable")

    def _connect(self) -> None:
        import psycopg

        assert self.dsn is not None
        try:
            self.pg = psycopg.connect(
                self.dsn,
                autocommit=False,
                cursor_factory=psycopg.RawCursor,  # $n placeholders, bound server-side
                connect_timeout=5,
                application_name=f"apinode {self.endpoint_id}"[:63],
            )
        except psycopg.Error as exc:
            self.pg = None
            raise WorkerError(
                p.ERR_UNAVAILABLE, f"{self._label()}: cannot connect: {_mask(str(exc), self.dsn)}"
            ) from None

    def _label(self) -> str:
        return f"database {self.connection_name!r}"

    def _where(self, i: int) -> str:
        return f"statement {i + 1}: " if len(self.statements) > 1 else ""

    def describe(self) -> dict[str, Any]:
        db = {"connection": self.connection_name} if self.connection_name else {"database": "bundled sqlite"}
        return {"kind": "sql", "statements": len(self.statements), "parameters": self.names, **db}


def _result(description: Any, fetchall: Any, rowcount: int) -> dict[str, Any]:
    if description is None:
        return {"updatedRows": max(rowcount, 0)}
    return {
        "columns": [d[0] for d in description],
        "rows": [[json_safe(v) for v in row] for row in fetchall()],
    }


def json_safe(v: Any) -> Any:
    """A database value as JSON: numbers stay numbers (a NaN or an infinity is null), a
    `numeric` is an integer when it has no fractional digits (sum, count) and a float
    otherwise, dates and times are ISO 8601 strings, an interval is seconds, bytes are
    base64, arrays are lists and json columns stay JSON; anything else is its text."""
    if v is None or isinstance(v, str | bool | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        if not v.is_finite():
            return None
        return int(v) if v.as_tuple().exponent >= 0 else float(v)  # type: ignore[operator]
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, uuid.UUID):
        return str(v)
    return str(v)


def _pg_error(exc: Any, where: str) -> WorkerError:
    """SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) are
    the caller's values; anything else is the statement's own failure."""
    state = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
    kind = p.ERR_SQL_VALUE if state[:2] in ("22", "23") else p.ERR_SQL
    return WorkerError(kind, f"{where}{text}" + (f" (SQLSTATE {state})" if state else ""))


def _mask(text: str, dsn: str) -> str:
    """`text` without the DSN's password, should a driver message ever quote it."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


def _list(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
