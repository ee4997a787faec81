"""Bundled datasets in memory, indexed by key columns, for lookups and enrichment.

A dataset is read once per generation (in a thread: a million-row CSV takes a second or
two and the event loop keeps serving), with the column types the compiler recorded in the
manifest (`schema`), so a value keeps its type: an integer column answers ints (null where
the file has no value), a date answers its ISO string. Columns are kept as numpy arrays
(object arrays for text) and a :class:`KeyIndex` maps a key to its row numbers with one
dict lookup; rows are turned into JSON-ready dicts only when they are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apz.features import FeatureValueError, coercer
from apz.specs import ColumnSpec
from apz.vocab import column_type_of
from node import errors


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    values: np.ndarray[Any, Any]
    nulls: np.ndarray[Any, Any] | None  # True where the file has no value; None when none is missing

    def get(self, i: int) -> Any:
        if self.nulls is not None and self.nulls[i]:
            return None
        v = self.values[i]
        if self.type == "float":
            f = float(v)
            return None if f != f else f
        return v.item() if hasattr(v, "item") else v  # np.str_ / np.int64 / np.bool_ -> str / int / bool


class Dataset:
    """The columns of one bundled dataset, and the key indexes built on it."""

    def __init__(self, name: str, columns: Sequence[Column]) -> None:
        self.name = name
        self.columns = {c.name: c for c in columns}
        self.rows = len(columns[0].values) if columns else 0
        self._indexes: dict[tuple[str, ...], KeyIndex] = {}

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise errors.BadRequest(f"dataset {self.name!r} has no column {name!r}") from None

    def index(self, keys: tuple[str, ...]) -> KeyIndex:
        """The index on `keys`, built on first use and shared by every endpoint asking for it."""
        idx = self._indexes.get(keys)
        if idx is None:
            idx = self._indexes[keys] = KeyIndex(self, keys)
        return idx

    def record(self, i: int, columns: Sequence[str]) -> dict[str, Any]:
        cols = self.columns
        return {name: cols[name].get(i) for name in columns}


DICT_ROWS = 100_000


class KeyIndex:
    """Key (a value, or a tuple of values for several key columns) -> row numbers.

    A table of up to DICT_ROWS rows, or with several key columns, is indexed by a dict (a
    lookup well under a µs: enrichment does one per predicted row). A bigger one keyed by
    one column is indexed by sorting: a stable argsort of the column and two binary searches
    per lookup (a few µs), no Python object per row, so a million-row table indexes in a
    fraction of a second and a few MB. Rows with a null in a key column are not indexed:
    null matches nothing. Matches come in file order.
    """

    def __init__(self, dataset: Dataset, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.types = tuple(dataset.column(k).type for k in keys)
        cols = [dataset.column(k) for k in keys]
        valid = np.ones(dataset.rows, dtype=bool)
        for c in cols:
            if c.nulls is not None:
                valid &= ~c.nulls
        ids = np.flatnonzero(valid)
        self._sorted: np.ndarray[Any, Any] | None = None
        self._by_tuple: dict[Any, list[int]] = {}
        if len(cols) == 1 and len(ids) > DICT_ROWS:
            values = cols[0].values[ids]
            order = np.argsort(values, kind="stable")
            self._sorted, self._rows = values[order], ids[order]
        else:
            columns = [c.values[ids].tolist() for c in cols]
            keys_of_rows = columns[0] if len(cols) == 1 else zip(*columns, strict=True)
            for i, key in zip(ids.tolist(), keys_of_rows, strict=True):
                self._by_tuple.setdefault(key, []).append(i)

    def find(self, key: Any) -> list[int]:
        """Row numbers of `key` (a tuple when the index has several columns), in file order."""
        if self._sorted is None:
            return self._by_tuple.get(key, [])
        s = self._sorted
        try:
            lo = int(s.searchsorted(key, "left"))
            if lo == len(s) or s[lo] != key:
                return []
            hi = int(s.searchsorted(key, "right"))
        except (TypeError, ValueError):  # a value numpy cannot compare with the column
            return []
        return self._rows[lo:hi].tolist()  # type: ignore[no-any-return]

    def key_of(self, data: dict[str, Any], names: Sequence[str], where: str = "") -> Any:
        """The index key for request values `data[names[j]]` (coerced to the key columns'
        types), or None when one of them is missing or null."""
        parts = []
        for name, column, ctype in zip(names, self.keys, self.types, strict=True):
            value = data.get(name)
            if value is None:
                return None
            parts.append(coerce_key(column, ctype, value, f"{where}{name!r}"))
        return parts[0] if len(parts) == 1 else tuple(parts)


def coerce_key(column: str, ctype: str, value: Any, shown: str) -> Any:
    """A caller's key value as the key column stores it: `"42"` finds the int 42."""
    if ctype in ("date", "datetime"):
        ctype = "string"
    try:  # the same coercions as features: "42" is the int 42
        return coercer(ctype, "none")(column, value)
    except FeatureValueError as exc:
        raise errors.BadRequest(str(exc).replace(f"feature {column!r}", f"key {shown}", 1)) from None


# ---- reading -----------------------------------------------------------------------------
def load_dataset(name: str, path: Path, fmt: str, schema: Sequence[ColumnSpec] | None) -> Dataset:
    """Reads a bundled dataset with the types of its manifest schema (inferred when absent)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _read(path, fmt, schema)
    types = {c.name: c.type for c in schema or ()}
    columns = []
    for field_ in table.schema:
        arr = table.column(field_.name).combine_chunks()
        ctype = types.get(field_.name) or column_type_of(field_.type)
        if ctype == "datetime" and pa.types.is_timestamp(arr.type):
            arr = iso_datetimes(arr)
        elif ctype in ("date", "datetime", "string") and not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
        if arr.null_count:
            arr = pc.fill_null(arr, {"bool": False, "int": 0, "float": 0.0}.get(ctype, ""))
        columns.append(Column(field_.name, ctype, _values(arr, ctype), nulls))
    del table
    pa.default_memory_pool().release_unused()
    return Dataset(name, columns)


def iso_datetimes(arr: Any) -> Any:
    """A timestamp column as ISO 8601 text, as Python's `isoformat` writes it:
    `2019-03-04T10:00:00`, with `.ffffff` only for a value that has a fraction of a second
    and `+01:00` only for a column with a time zone. (Arrow's `%S` writes the fraction of
    the column's unit, `10:00:00.000000`, for a whole second: Parquet has no seconds unit.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    if arr.type.tz is None:
        try:  # the common case, vectorised: whole seconds only
            whole = pc.cast(arr, pa.timestamp("s"))
        except pa.ArrowInvalid:  # some value has a fraction of a second
            pass
        else:
            return pc.strftime(whole, format="%Y-%m-%dT%H:%M:%S")
    return pa.array([None if v is None else v.isoformat() for v in arr.to_pylist()], pa.string())


def _values(arr: Any, ctype: str) -> np.ndarray[Any, Any]:
    """A column as numpy: numbers as they are; short text as fixed-width unicode (a
    million country codes take 8 MB, not a million str objects); long text as objects."""
    if ctype in ("int", "float", "bool"):
        return arr.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
    import pyarrow.compute as pc

    longest = pc.max(pc.utf8_length(arr)).as_py() or 0 if len(arr) else 0
    if longest <= 64:
        return np.array(arr.to_pylist(), dtype=f"U{max(1, longest)}")
    return arr.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _read(path: Path, fmt: str, schema: Sequence[ColumnSpec] | None) -> Any:
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        arrow = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
        types = {c.name: arrow[c.type] for c in schema or () if c.type in arrow}
        # an empty cell is a null in a string column too, as in the SQLite tables the compiler builds
        options = pcsv.ConvertOptions(column_types=types, strings_can_be_null=True)
        return pcsv.read_csv(path, convert_options=options)
    except (OSError, pa.ArrowException) as exc:
        raise errors.BadRequest(f"dataset {path.name} cannot be read: {exc}") from None
