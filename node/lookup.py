"""Dataset lookup endpoints and enrichment of prediction requests, in the front process.

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

from node import errors
from node.datasets import Dataset, KeyIndex

MISSING_KEY = "MISSING_LOOKUP_KEY"
NO_MATCH = "NO_LOOKUP_MATCH"
MULTIPLE = "MULTIPLE_LOOKUP_MATCHES"


def _describe(dataset: Dataset, keys: Sequence[str], data: dict[str, Any], names: Sequence[str]) -> str:
    shown = ", ".join(f"{k}={data.get(n)!r}" for k, n in zip(keys, names, strict=True))
    return f"dataset {dataset.name!r} ({shown})"


class LookupEndpoint:
    """A `lookup` endpoint: `{"data": {keys}}` -> `{"data": {columns}}`."""

    def __init__(self, dataset: Dataset, entry: dict[str, Any]) -> None:
        self.dataset = dataset
        self.keys = tuple(entry["keys"])
        self.columns = list(entry.get("columns") or dataset.columns)
        for c in self.columns:
            dataset.column(c)
        self.on_no_match = entry.get("on_no_match", "null")
        self.on_multiple = entry.get("on_multiple", "first")
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


@dataclass(frozen=True, slots=True)
class EnrichSource:
    dataset: Dataset
    index: KeyIndex
    key_columns: tuple[str, ...]
    key_features: tuple[str, ...]  # the request features holding the keys, in key column order
    columns: tuple[tuple[str, str], ...]  # (dataset column, feature it becomes)
    on_missing_key: str
    on_no_match: str
    on_multiple: str
    override: bool  # looked-up values replace values the caller sent


class Enricher:
    """Completes a request's features from bundled datasets before the model sees them."""

    def __init__(self, sources: Sequence[EnrichSource]) -> None:
        self.sources = tuple(sources)

    @classmethod
    def build(cls, entries: Sequence[dict[str, Any]], datasets: dict[str, Dataset]) -> Enricher:
        sources = []
        for e in entries:
            ds = datasets[e["dataset"]]
            keys: dict[str, str] = e["keys"]  # dataset key column -> request feature
            key_columns = tuple(keys)
            columns = tuple((c, f) for c, f in e["columns"].items())
            for c, _ in columns:
                ds.column(c)
            sources.append(
                EnrichSource(
                    dataset=ds,
                    index=ds.index(key_columns),
                    key_columns=key_columns,
                    key_features=tuple(keys[c] for c in key_columns),
                    columns=columns,
                    on_missing_key=e.get("on_missing_key", "fail"),
                    on_no_match=e.get("on_no_match", "ignore"),
                    on_multiple=e.get("on_multiple", "ignore"),
                    override=bool(e.get("override", False)),
                )
            )
        return cls(sources)

    def apply(self, features: Any, where: str = "") -> tuple[dict[str, Any], str | None]:
        """The completed features, and the reason to ignore the row (None: predict it)."""
        if not isinstance(features, dict):
            raise errors.BadRequest(f"{where}'features' must be a JSON object of feature name -> value")
        out = dict(features)
        for s in self.sources:
            key = s.index.key_of(out, s.key_features, where)
            if key is None:
                if s.on_missing_key == "fail":
                    name = next(f for f in s.key_features if out.get(f) is None)
                    raise errors.BadRequest(
                        f"{where}feature {name!r} is missing or null: it is the key to look up "
                        f"{', '.join(c for c, _ in s.columns)} in dataset {s.dataset.name!r}"
                    )
                if s.on_missing_key == "ignore":
                    return out, MISSING_KEY
                continue
            rows = s.index.find(key)
            if len(rows) != 1:
                reason, policy = (NO_MATCH, s.on_no_match) if not rows else (MULTIPLE, s.on_multiple)
                if policy == "fail":
                    what = _describe(s.dataset, s.key_columns, out, s.key_features)
                    if not rows:
                        raise errors.NoLookupMatch(f"{where}enrichment: no row of {what}")
                    raise errors.MultipleLookupMatches(f"{where}enrichment: {len(rows)} rows of {what} match")
                if policy == "ignore":
                    return out, reason
                if policy == "continue":
                    continue
            row = rows[0]
            cols = s.dataset.columns
            for column, feature in s.columns:
                if s.override or out.get(feature) is None:
                    out[feature] = cols[column].get(row)
        return out, None
