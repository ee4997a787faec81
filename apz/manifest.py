"""`manifest.json` -> :class:`~apz.specs.Manifest`: the service-wide parts (format, ids,
the file listing, datasets, API keys, query log); each endpoint's entry is
:mod:`apz.endpoints`' to read.

Everything is checked here, once, with a :class:`~apz.vocab.PackageError` that names the
field ("manifest.json: datasets.customers.format must be csv or parquet"), so that the
typed manifest holds only values of the types its classes declare.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from apz.endpoints import parse_endpoint
from apz.specs import ApiKeySpec, ColumnSpec, DatasetSpec, FileEntry, Manifest, QueryLogSpec
from apz.vocab import (
    COLUMN_TYPES,
    DATASET_FORMATS,
    FORMAT,
    FORMAT_VERSION,
    ID_RE,
    MAX_FILES,
    SHA256_RE,
    PackageError,
    refuse,
    require,
    safe_member,
)


def parse_manifest(data: Any) -> Manifest:
    require(isinstance(data, dict), "not a JSON object")
    require(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    fv = data.get("format_version")
    require(fv == FORMAT_VERSION, f"unsupported format_version {fv!r} (this node reads {FORMAT_VERSION})")
    service, version = data.get("service"), data.get("version")
    if not (isinstance(service, str) and ID_RE.fullmatch(service)):
        refuse(f"bad service id {service!r}")
    if not (isinstance(version, str) and ID_RE.fullmatch(version)):
        refuse(f"bad version {version!r}")
    files = _files(data.get("files"))
    eps = data.get("endpoints")
    if not isinstance(eps, dict) or not eps:
        refuse("'endpoints' must be a non-empty object")
    datasets = _datasets(data.get("datasets"), files)
    endpoints = {eid: parse_endpoint(eid, e, files, datasets) for eid, e in eps.items()}
    return Manifest(
        service=service,
        version=version,
        endpoints=endpoints,
        files=files,
        datasets=datasets,
        api_keys=_api_keys(data.get("api_keys")),
        query_log=_query_log(data.get("query_log")),
    )


def _files(files: Any) -> dict[str, FileEntry]:
    if not isinstance(files, dict):
        refuse("'files' must be an object")
    require(len(files) <= MAX_FILES, f"'files' lists {len(files)} files; the limit is {MAX_FILES}")
    out = {}
    for name, meta in files.items():
        safe_member(name)
        require(
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and bool(SHA256_RE.fullmatch(meta["sha256"]))
            and type(meta.get("size")) is int
            and meta["size"] >= 0,
            f"files[{name!r}] needs sha256 (64 hex digits) and size (bytes)",
        )
        out[name] = FileEntry(meta["sha256"], meta["size"])
    _no_file_in_the_way(out)
    return out


def _no_file_in_the_way(files: dict[str, FileEntry]) -> None:
    """A path cannot be both a file and a folder of the package (`code` and `code/x.py`)."""
    names = {str(PurePosixPath(n)) for n in files}
    for name in names:
        for parent in PurePosixPath(name).parents:
            if str(parent) in names:
                refuse(f"{str(parent)!r} is both a file and a folder of the package")


def _datasets(datasets: Any, files: dict[str, FileEntry]) -> dict[str, DatasetSpec]:
    if datasets is None:
        return {}
    require(isinstance(datasets, dict), "'datasets' must be an object")
    out = {}
    for name, d in datasets.items():
        require(isinstance(d, dict), f"datasets.{name} must be an object")
        path = d.get("path")
        require(isinstance(path, str) and path in files, f"datasets.{name}.path {path!r} is not a file of the package")
        require(d.get("format") in DATASET_FORMATS, f"datasets.{name}.format must be csv or parquet")
        schema = d.get("schema")
        require(
            schema is None
            or (
                isinstance(schema, list)
                and all(
                    isinstance(c, dict) and isinstance(c.get("name"), str) and c.get("type") in COLUMN_TYPES
                    for c in schema
                )
            ),
            f"datasets.{name}.schema must be a list of {{name, type}} with types in {COLUMN_TYPES}",
        )
        columns = d.get("columns")
        require(
            columns is None or (isinstance(columns, list) and all(isinstance(c, str) for c in columns)),
            f"datasets.{name}.columns must be a list of column names",
        )
        typed = tuple(ColumnSpec(c["name"], c["type"]) for c in schema) if schema is not None else None
        names = tuple(c.name for c in typed) if typed is not None else tuple(columns) if columns is not None else None
        out[name] = DatasetSpec(name=name, path=path, format=d["format"], schema=typed, columns=names)
    return out


def _api_keys(keys: Any) -> tuple[ApiKeySpec, ...]:
    if keys is None:
        return ()
    require(isinstance(keys, list), "'api_keys' must be a list of {id, sha256}")
    for i, k in enumerate(keys):
        require(
            isinstance(k, dict)
            and isinstance(k.get("id", ""), str)
            and isinstance(k.get("sha256"), str)
            and bool(SHA256_RE.fullmatch(k["sha256"])),
            f"api_keys[{i}] must be {{id, sha256 (64 hex digits)}}",
        )
    return tuple(ApiKeySpec(k.get("id", ""), k["sha256"]) for k in keys)


def _query_log(doc: Any) -> QueryLogSpec | None:
    if doc is None:
        return None
    try:
        return parse_query_log(doc, "manifest.json")
    except ValueError as exc:
        raise PackageError(str(exc)) from None


def parse_query_log(doc: Any, where: str) -> QueryLogSpec:
    """A `query_log` object (of a manifest, or of the node's override file `where`);
    ValueError names the field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: query_log must be an object")
    rate = doc.get("sample_rate", 1.0)
    if not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(f"{where}: query_log.sample_rate must be in [0, 1], got {rate!r}")
    exclude = doc.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise ValueError(f"{where}: query_log.exclude must be a list of feature names")
    return QueryLogSpec(bool(doc.get("enabled", True)), float(rate), frozenset(exclude))
