"""Dataset lookup endpoints and enrichment of prediction requests, in the front process.

Enrichment may also read a table of a database the node connects to: that goes through an
SQL worker pool of the endpoint (:class:`TableSource`).

Both answer from a :class:`~node.datasets.KeyIndex` of a bundled dataset: one dict access,
no worker round trip, no user code. What happens when a key matches no row or several rows
is the endpoint's policy (manifest keys, documented in the README):

lookup endpoints  `on_no_match`: `null` (default: every column null, and
                  `"ignored": true, "ignoreReason": "NO_LOOKUP_MATCH"`) | `fail` (404 NO_LOOKUP_MATCH);
                  `on_multiple`: `first` (default: the first row in file order, and `"matches": n`)
                  | `null` | `fail` (409 MULTIPLE_LOOKUP_MATCHES).
enrichment        `on_missing_key`: `fail` (default, 400) | `ignore` | `continue`;
                  `on_no_match`: `ignore` (default) | `fail` | `continue`;
                  `on_multiple`: `ignore` (default) | `fail` | `first`.
                  `ignore` answers that row `{"ignored": true, "ignoreReason": ...}` without running
                  the model; `continue` leaves the features unfilled (the model imputes them if it can).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apz.specs import EnrichmentSpec, LookupSpec
from node import errors
from node.datasets import Dataset, KeyIndex
from node.supervisor.pool import Pool

MISSING_KEY = "MISSING_LOOKUP_KEY"
NO_MATCH = "NO_LOOKUP_MATCH"
MULTIPLE = "MULTIPLE_LOOKUP_MATCHES"


def _describe(dataset: Dataset, keys: Sequence[str], data: dict[str, Any], names: Sequence[str]) -> str:
    shown = ", ".join(f"{k}={data.get(n)!r}" for k, n in zip(keys, names, strict=True))
    return f"dataset {dataset.name!r} ({shown})"


class LookupEndpoint:
    """A `lookup` endpoint: `{"data": {keys}}` -> `{"data": {columns}}`."""

    def __init__(self, dataset: Dataset, spec: LookupSpec) -> None:
        self.dataset = dataset
        self.keys = spec.keys
        self.columns = list(spec.columns or dataset.columns)
        for c in self.columns:
            dataset.column(c)
        self.on_no_match = spec.on_no_match
        self.on_multiple = spec.on_multiple
        self.index: KeyIndex = dataset.index(self.keys)

    def lookup(self, data: Any, where: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            raise errors.BadRequest(f"{where}'data' must be a JSON object of key column -> value")
        missing = [k for k in self.keys if data.get(k) is None]
        if missing:
            raise errors.BadRequest(
                f"{where}key {missing[0]!r} is missing or null (this lookup needs: {', '.join(self.keys)})"
            )
        rows = self.index.find(self.index.key_of(data, self.keys, where))
        if len(rows) == 1:
            return {"data": self.dataset.record(rows[0], self.columns)}
        if not rows:
            if self.on_no_match == "fail":
                raise errors.NoLookupMatch(f"{where}no row of {_describe(self.dataset, self.keys, data, self.keys)}")
            return self._null(NO_MATCH)
        if self.on_multiple == "fail":
            raise errors.MultipleLookupMatches(
                f"{where}{len(rows)} rows of {_describe(self.dataset, self.keys, data, self.keys)} match"
            )
        if self.on_multiple == "null":
            return self._null(MULTIPLE)
        return {"data": self.dataset.record(rows[0], self.columns), "matches": len(rows)}

    def _null(self, reason: str) -> dict[str, Any]:
        return {"data": dict.fromkeys(self.columns), "ignored": True, "ignoreReason": reason}

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset.name, "rows": self.dataset.rows, "keys": list(self.keys)}


class TableSource:
    """A table of a database the node connects to (`connection:`), read through an SQL
    worker pool: the front process never talks to a database itself."""

    def __init__(self, pool: Pool, name: str) -> None:
        self.pool, self.name = pool, name

    async def fetch(self, key: tuple[Any, ...]) -> list[dict[str, Any]]:
        out = await self.pool.submit(({f"k{i}": v for i, v in enumerate(key)}, False))
        columns = out.result["columns"]
        return [dict(zip(columns, row, strict=True)) for row in out.result["rows"]]


def table_statement(entry: EnrichmentSpec) -> str:
    """The SELECT an enrichment from a table runs: its columns, by key, at most two rows
    (two are enough to tell one match from several). Names are quoted identifiers; the
    values are bound parameters."""
    assert entry.table is not None
    columns = ", ".join(_quote(c) for c in entry.columns)
    where = " AND ".join(f"{_quote(k)} = :k{i}" for i, k in enumerate(entry.keys))
    table = ".".join(_quote(part) for part in entry.table.split("."))
    return f"SELECT {columns} FROM {table} WHERE {where} LIMIT 2"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class EnrichSource:
    name: str  # for messages: dataset 'x' or table 'y'
    dataset: Dataset | None  # a bundled dataset, indexed...
    index: KeyIndex | None
    table: TableSource | None  # ... or a table read through a worker pool
    key_columns: tuple[str, ...]
    key_features: tuple[str, ...]  # the request features holding the keys, in key column order
    columns: tuple[tuple[str, str], ...]  # (dataset column, feature it becomes)
    on_missing_key: str
    on_no_match: str
    on_multiple: str
    override: bool  # looked-up values replace values the caller sent

    def key_of(self, data: dict[str, Any], where: str) -> Any:
        if self.index is not None:
            return self.index.key_of(data, self.key_features, where)
        values = tuple(data.get(f) for f in self.key_features)
        if any(v is None for v in values):
            return None
        for f, v in zip(self.key_features, values, strict=True):
            if not isinstance(v, str | int | float | bool):
                raise errors.BadRequest(
                    f"{where}feature {f!r} must be a string, number or boolean to look up {self.name}"
                )
        return values

    async def matches(self, key: Any) -> list[Any]:
        """Rows of `key`: row numbers of the dataset, or dicts from the table."""
        if self.table is not None:
            return await self.table.fetch(key)
        assert self.index is not None
        return self.index.find(key)

    def value(self, row: Any, column: str) -> Any:
        if self.table is not None:
            return row.get(column)
        assert self.dataset is not None
        return self.dataset.columns[column].get(row)


class Enricher:
    """Completes a request's features from bundled datasets or database tables before the
    model sees them."""

    def __init__(self, sources: Sequence[EnrichSource]) -> None:
        self.sources = tuple(sources)
        # only bundled datasets: `apply` never waits, so many rows need no task each
        self.local = all(s.table is None for s in self.sources)

    @classmethod
    def build(
        cls, entries: Sequence[EnrichmentSpec], datasets: dict[str, Dataset], tables: dict[int, TableSource]
    ) -> Enricher:
        """`tables[i]` reads the table of `entries[i]` when that entry names a table."""
        sources = []
        for i, e in enumerate(entries):
            keys = e.keys  # dataset key column -> request feature
            key_columns = tuple(keys)
            columns = tuple(e.columns.items())
            ds = datasets.get(e.dataset) if e.dataset is not None else None
            if ds is not None:
                for c, _ in columns:
                    ds.column(c)
            sources.append(
                EnrichSource(
                    name=e.source,
                    dataset=ds,
                    index=ds.index(key_columns) if ds is not None else None,
                    table=tables.get(i) if ds is None else None,
                    key_columns=key_columns,
                    key_features=tuple(keys[c] for c in key_columns),
                    columns=columns,
                    on_missing_key=e.on_missing_key,
                    on_no_match=e.on_no_match,
                    on_multiple=e.on_multiple,
                    override=e.override,
                )
            )
        return cls(sources)

    async def apply(self, features: Any, where: str = "") -> tuple[dict[str, Any], str | None]:
        """The completed features, and the reason to ignore the row (None: predict it)."""
        if not isinstance(features, dict):
            raise errors.BadRequest(f"{where}'features' must be a JSON object of feature name -> value")
        out = dict(features)
        for s in self.sources:
            key = s.key_of(out, where)
            if key is None:
                if s.on_missing_key == "fail":
                    name = next(f for f in s.key_features if out.get(f) is None)
                    raise errors.BadRequest(
                        f"{where}feature {name!r} is missing or null: it is the key to look up "
                        f"{', '.join(c for c, _ in s.columns)} in {s.name}"
                    )
                if s.on_missing_key == "ignore":
                    return out, MISSING_KEY
                continue
            rows = await s.matches(key)
            if len(rows) != 1:
                reason, policy = (NO_MATCH, s.on_no_match) if not rows else (MULTIPLE, s.on_multiple)
                if policy == "fail":
                    shown = ", ".join(f"{k}={out.get(n)!r}" for k, n in zip(s.key_columns, s.key_features, strict=True))
                    if not rows:
                        raise errors.NoLookupMatch(f"{where}enrichment: no row of {s.name} ({shown})")
                    raise errors.MultipleLookupMatches(f"{where}enrichment: several rows of {s.name} ({shown}) match")
                if policy == "ignore":
                    return out, reason
                if policy == "continue":
                    continue
            row = rows[0]
            for column, feature in s.columns:
                if s.override or out.get(feature) is None:
                    out[feature] = s.value(row, column)
        return out, None
