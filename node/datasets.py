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

from node import errors
from node.features import _COERCE  # the same coercions as features: "42" is the int 42
from node.package import column_type_of


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
        return v.item() if hasattr(v, "item") else v


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


class KeyIndex:
    """Key (a value, or a tuple of values for several key columns) -> row numbers.

    Rows with a null in a key column are not indexed: a null matches nothing. Duplicated
    keys are found once, at build time, so a lookup of a unique key stays one dict access.
    """

    def __init__(self, dataset: Dataset, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.types = tuple(dataset.column(k).type for k in keys)
        cols = [dataset.column(k) for k in keys]
        n = dataset.rows
        values = [_python_values(c) for c in cols]
        rows = list(zip(*values, strict=True)) if len(values) > 1 else values[0]
        valid = np.ones(n, dtype=bool)
        for c in cols:
            if c.nulls is not None:
                valid &= ~c.nulls
        if not valid.all():
            keep = np.flatnonzero(valid).tolist()
            pairs = [(rows[i], i) for i in keep]
        else:
            pairs = list(zip(rows, range(n), strict=True))
        # the first row of a key wins: built from the end, earlier rows overwrite later ones
        self.first: dict[Any, int] = dict(reversed(pairs))
        self.multiple: dict[Any, list[int]] = {}
        if len(self.first) < len(pairs):
            for key, i in pairs:
                if self.first[key] != i:
                    self.multiple.setdefault(key, [self.first[key]]).append(i)

    def find(self, key: Any) -> list[int]:
        """Row numbers of `key` (a tuple when the index has several columns), in file order."""
        i = self.first.get(key)
        if i is None:
            return []
        if self.multiple:
            more = self.multiple.get(key)
            if more is not None:
                return more
        return [i]

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
    try:
        return _COERCE[ctype](column, value)
    except errors.BadRequest as exc:
        raise errors.BadRequest(exc.message.replace(f"feature {column!r}", f"key {shown}", 1)) from None


def _python_values(c: Column) -> list[Any]:
    if c.values.dtype == object:
        return list(c.values)
    return c.values.tolist()  # type: ignore[no-any-return]


# ---- reading -----------------------------------------------------------------------------
def load_dataset(name: str, path: Path, fmt: str, schema: Sequence[dict[str, str]] | None) -> Dataset:
    """Reads a bundled dataset with the types of its manifest schema (inferred when absent)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _read(path, fmt, schema)
    types = {c["name"]: c["type"] for c in schema or ()}
    columns = []
    for field_ in table.schema:
        arr = table.column(field_.name).combine_chunks()
        ctype = types.get(field_.name) or column_type_of(field_.type)
        if ctype == "datetime" and pa.types.is_timestamp(arr.type):
            arr = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S")
        elif ctype in ("date", "datetime", "string") and not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
        if ctype in ("int", "float", "bool") and arr.null_count:
            arr = pc.fill_null(arr, False if ctype == "bool" else 0)
        values = arr.to_numpy(zero_copy_only=False)
        columns.append(Column(field_.name, ctype, values, nulls))
    return Dataset(name, columns)


def _read(path: Path, fmt: str, schema: Sequence[dict[str, str]] | None) -> Any:
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        arrow = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
        types = {c["name"]: arrow[c["type"]] for c in schema or () if c["type"] in arrow}
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    except (OSError, pa.ArrowException) as exc:
        raise errors.BadRequest(f"dataset {path.name} cannot be read: {exc}") from None
