"""The bundled SQLite database of `sql` endpoints: the service's datasets, one table each.

A table is named like its dataset and its columns keep their types: integer columns
(missing values included: CSVs are read with nullable dtypes) are INTEGER, floats REAL,
booleans INTEGER 0/1, timestamps TEXT as SQLite writes them (`YYYY-MM-DD HH:MM:SS`, so
that they compare with `datetime(...)`), anything else TEXT; a missing value is NULL.

Each statement of a bundled endpoint is prepared against that database (`EXPLAIN`, with
the parameters bound as NULL), so that a syntax error, an unknown table or column, or a
placeholder that is not `:name` fails the compilation rather than the first request. The
node opens the file read-only: a statement that would write is refused here.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from apz import sqlparams
from compiler.errors import CompileError
from compiler.inputs import read_table

# What a read-only statement may do, as SQLite's authorizer reports it.
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def package_path(service: str) -> str:
    return f"sqlite/{service}.db"


def build_database(datasets: dict[str, Path]) -> tuple[bytes, dict[str, dict[str, str]]]:
    """The database file's bytes and, per table, its column types."""
    with tempfile.TemporaryDirectory(prefix="apinode-sqlite-") as tmp:
        path = Path(tmp) / "bundled.db"
        db = sqlite3.connect(path)
        tables = {}
        try:
            for name, source in datasets.items():
                tables[name] = _add_table(db, name, _read(source, f"datasets.{name}"))
            db.commit()
            db.execute("VACUUM")
        finally:
            db.close()
        return path.read_bytes(), tables


def _read(path: Path, where: str) -> Any:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        try:  # nullable dtypes: an integer column with blanks stays integer
            return pd.read_csv(path, dtype_backend="numpy_nullable")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise CompileError(f"{where}: cannot read {path}: {str(exc).strip().splitlines()[0]}") from None
    return read_table(path, where)


def _sql_type(dtype: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return "INTEGER"
    if pd.api.types.is_float_dtype(dtype):
        return "REAL"
    return "TEXT"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _add_table(db: sqlite3.Connection, name: str, table: Any) -> dict[str, str]:
    import pandas as pd

    columns = {str(c): _sql_type(table[c].dtype) for c in table.columns}
    ddl = ", ".join(f"{_quote(c)} {t}" for c, t in columns.items())
    db.execute(f"CREATE TABLE {_quote(name)} ({ddl})")
    values = []
    for c in table.columns:
        col = table[c]
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            col = col.dt.strftime("%Y-%m-%d %H:%M:%S")
        values.append([None if _missing(v) else _plain(v) for v in col.tolist()])
    marks = ", ".join("?" * len(columns))
    db.executemany(f"INSERT INTO {_quote(name)} VALUES ({marks})", zip(*values, strict=True))
    return columns


def _missing(v: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # a list or an array in a Parquet cell
        return False


def _plain(v: Any) -> Any:
    if isinstance(v, bool | int | float | str | bytes):
        return v
    if hasattr(v, "item"):  # a numpy scalar
        return v.item()
    return str(v)


def check_statements(db_bytes: bytes, eid: str, statements: tuple[str, ...], service_file: Path, line: int) -> None:
    """Prepares each statement against the bundled database; CompileError if one fails."""
    with tempfile.TemporaryDirectory(prefix="apinode-sqlite-") as tmp:
        path = Path(tmp) / "check.db"
        path.write_bytes(db_bytes)
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        writes: list[int] = []

        def authorize(action: int, *_: Any) -> int:
            if action in _READ_ACTIONS:
                return sqlite3.SQLITE_OK
            writes.append(action)
            return sqlite3.SQLITE_DENY

        db.set_authorizer(authorize)
        try:
            for i, sql in enumerate(statements):
                stmt = sqlparams.parse(sql)
                where = f"{service_file}: line {line}: endpoints.{eid}.statements[{i}]"
                try:
                    db.execute("EXPLAIN " + stmt.render(sqlparams.sqlite), [None] * len(stmt.names))
                except sqlite3.Error as exc:
                    if writes:
                        raise CompileError(
                            f"{where}: the bundled database is read-only: only queries (SELECT) can run on it"
                        ) from None
                    hint = ""
                    if isinstance(exc, sqlite3.ProgrammingError) and "bindings" in str(exc):
                        hint = " (name parameters :name; ?, @name and $name placeholders are not supported)"
                    raise CompileError(f"{where}: {exc}{hint}") from None
        finally:
            db.close()
