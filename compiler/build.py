"""`compile_service`: a service folder -> one package file, the compiler's entry point.

It reads service.yaml, builds each endpoint (prediction: compiler/prediction.py; function:
compiler/functions.py; sql: compiler/sqlite.py for a bundled database), describes the bundled datasets, and writes the package with the
node's own `write_package`, which validates the manifest with the node's parser.
"""

from __future__ import annotations

import json
import platform
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from apz.archive import write_package
from apz.vocab import PackageError
from compiler.console import Reporter
from compiler.errors import CompileError
from compiler.functions import FunctionCode, check_class, check_function, collect_code, collect_folders
from compiler.parity import ParityResult
from compiler.spec import (
    DATASET_FORMATS,
    SERVICE_FILE,
    CustomPredictionEndpoint,
    FunctionEndpoint,
    LookupEndpoint,
    PredictionEndpoint,
    ServiceSpec,
    SqlEndpoint,
    read_service,
)

LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")
BOOSTER_LIBRARIES = ("onnxmltools", "xgboost", "lightgbm")


@dataclass(slots=True)
class CompileReport:
    out: Path
    sha256: str
    size: int
    manifest: dict[str, Any]
    parity: dict[str, ParityResult] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def compile_service(folder: Path, out: Path | None = None, *, progress: bool = True) -> CompileReport:
    """Compiles `folder` into `out` (default: ./<service>-<version>.apz).

    Raises :class:`CompileError` with a one-line message for anything the user must fix.
    """
    # Library warnings (deprecations, unknown categories...) would clutter stderr, which
    # holds only the error line; the ones that matter are reported as our own warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _compile(Path(folder), out, Reporter(progress))


def _compile(folder: Path, out: Path | None, rep: Reporter) -> CompileReport:
    rep.step(f"reading {folder / SERVICE_FILE}")
    spec = read_service(folder)
    out = Path(out) if out is not None else Path.cwd() / f"{spec.service}-{spec.version}.apz"
    files: dict[str, bytes | Path] = {}
    endpoints: dict[str, dict[str, Any]] = {}
    parity: dict[str, ParityResult] = {}
    codes: list[tuple[str, FunctionCode]] = []
    boosters = False
    datasets = _datasets(spec, files, rep)
    folders: dict[str, list[Path]] = {}
    sqlite_db = _bundled_database(spec, files, rep)
    for eid, ep in spec.endpoints.items():
        queries: list[dict[str, Any]] | None
        if isinstance(ep, PredictionEndpoint):
            from compiler.prediction import build_prediction

            _check_enrich(eid, ep.enrich, datasets)
            built = build_prediction(ep, folder, rep)
            entry, queries = built.entry, built.test_queries
            files[entry["model"]["path"]] = built.onnx
            files.update(built.files)
            parity[eid] = built.parity
            boosters = boosters or built.booster
            if ep.enrich:
                entry["enrich"] = ep.enrich
        elif isinstance(ep, LookupEndpoint):
            rep.step(f"checking {eid}: lookup in {ep.dataset} by {', '.join(ep.keys)}")
            entry = _lookup_entry(eid, ep, datasets)
            queries = ep.test_queries
        elif isinstance(ep, CustomPredictionEndpoint):
            rep.step(f"checking {eid}: {ep.file.name}:{ep.cls}")
            _check_enrich(eid, ep.enrich, datasets)
            code = check_class(ep, folder)
            codes.append((eid, code))
            entry = {"type": "custom-prediction", "code": {"path": code.path, "root": "code", "class": code.function}}
            if ep.features is not None:
                entry["features"] = [
                    {"name": f.name, "type": f.type, "nullable": f.nullable is not False} for f in ep.features
                ]
            for key, value in (("task", ep.task), ("classes", ep.classes), ("enrich", ep.enrich or None)):
                if value is not None:
                    entry[key] = value
            folders[eid] = list(ep.folders)
            queries = ep.test_queries
        elif isinstance(ep, SqlEndpoint):
            entry, queries = _sql_entry(spec, ep, sqlite_db, rep), ep.test_queries
        else:
            assert isinstance(ep, FunctionEndpoint)
            rep.step(f"checking {eid}: {ep.file.name}:{ep.function}()")
            code = check_function(ep, folder)
            codes.append((eid, code))
            entry = {
                "type": "function",
                "code": {"path": code.path, "root": "code", "function": code.function},
            }
            folders[eid] = list(ep.folders)
            queries = ep.test_queries
        if queries is not None:
            entry["test_queries"] = f"tests/{eid}.json"
            files[entry["test_queries"]] = json.dumps(queries, indent=2).encode()
        if ep.pool:
            entry["pool"] = dict(ep.pool)
        endpoints[eid] = entry
    if codes:
        files.update(collect_code(codes))
    all_folders = [f for fs in folders.values() for f in fs]
    if all_folders:
        rep.step(f"packing {len(set(all_folders))} managed folder(s)")
        folder_files, paths = collect_folders(all_folders, folder)
        files.update(folder_files)
        for eid, fs in folders.items():
            if fs:
                endpoints[eid]["folders"] = [paths[f] for f in fs]
    manifest: dict[str, Any] = {
        "service": spec.service,
        "version": spec.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "compiler": compiler_info(boosters),
        "datasets": datasets,
        "endpoints": endpoints,
    }
    if spec.api_keys:
        manifest["api_keys"] = spec.api_keys
    if spec.query_log is not None:
        manifest["query_log"] = spec.query_log
    rep.step(f"packing {out}")
    try:
        sha = write_package(out, manifest, files)
    except PackageError as exc:
        raise CompileError(f"the package would be refused by the node: {exc}") from None
    except OSError as exc:
        raise CompileError(f"cannot write {out}: {exc.strerror or exc}") from None
    written = dict(manifest, files=_listing(files))
    rep.parity_table(list(parity.values()))
    size = out.stat().st_size
    rep.done(out, size, sha)
    return CompileReport(out, sha, size, written, parity, rep.warnings)


def _bundled_database(spec: ServiceSpec, files: dict[str, bytes | Path], rep: Reporter) -> bytes | None:
    """The SQLite database of the service's datasets, when a sql endpoint uses it."""
    if not any(isinstance(e, SqlEndpoint) and e.database == "bundled" for e in spec.endpoints.values()):
        return None
    from compiler.sqlite import build_database, package_path

    rep.step(f"building the SQLite database {package_path(spec.service)} from {len(spec.datasets)} dataset(s)")
    db, tables = build_database(spec.datasets)
    for name, columns in tables.items():
        rep.note(f"table {name}: " + ", ".join(f"{c} {t}" for c, t in columns.items()))
    files[package_path(spec.service)] = db
    return db


def _sql_entry(spec: ServiceSpec, ep: SqlEndpoint, db: bytes | None, rep: Reporter) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "sql", "statements": list(ep.statements)}
    if ep.connection is not None:
        rep.step(f"{ep.id}: {len(ep.statements)} statement(s) on the node's connection {ep.connection!r}")
        entry["connection"] = ep.connection
        return entry
    from compiler.sqlite import check_statements, package_path

    assert db is not None
    rep.step(f"checking {ep.id}: {len(ep.statements)} statement(s) against the bundled database")
    check_statements(db, ep.id, ep.statements, spec.folder / SERVICE_FILE, ep.line)
    entry["database"] = package_path(spec.service)
    return entry


def _listing(files: dict[str, bytes | Path]) -> dict[str, dict[str, Any]]:
    from apz.vocab import sha256_bytes

    listing = {}
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        listing[name] = {"sha256": sha256_bytes(data), "size": len(data)}
    return listing


def _datasets(spec: ServiceSpec, files: dict[str, bytes | Path], rep: Reporter) -> dict[str, dict[str, Any]]:
    """Each bundled dataset as it is, with the column types the node will read it with
    (inferred by Arrow: an integer column with missing values stays an integer column)."""
    out: dict[str, dict[str, Any]] = {}
    for name, path in spec.datasets.items():
        rep.step(f"reading dataset {name}: {path.relative_to(spec.folder)}")
        fmt = DATASET_FORMATS[path.suffix.lower()]
        schema, rows = _schema(path, fmt, f"datasets.{name}")
        target = f"datasets/{name}{'.csv' if fmt == 'csv' else '.parquet'}"
        files[target] = path
        out[name] = {
            "path": target,
            "format": fmt,
            "rows": rows,
            "columns": [c["name"] for c in schema],
            "schema": schema,
        }
    return out


def _schema(path: Path, fmt: str, where: str) -> tuple[list[dict[str, str]], int]:
    import pyarrow as pa

    from apz.vocab import column_type_of

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            arrow_schema, rows = meta.schema.to_arrow_schema(), meta.num_rows
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
            arrow_schema, rows = table.schema, table.num_rows
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"{where}: cannot read {path}: {first}") from None
    return [{"name": f.name, "type": column_type_of(f.type)} for f in arrow_schema], rows


def _columns_of(datasets: dict[str, dict[str, Any]], name: str, where: str) -> list[str]:
    if name not in datasets:
        known = ", ".join(datasets) or "none"
        raise CompileError(f"{where}: no dataset {name!r} (the service's datasets: {known})")
    return list(datasets[name]["columns"])


def _check_columns(columns: list[str], wanted: Any, dataset: str, where: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise CompileError(
            f"{where}: dataset {dataset!r} has no column {missing[0]!r} (its columns: {', '.join(columns)})"
        )


def _lookup_entry(eid: str, ep: LookupEndpoint, datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    where = f"endpoints.{eid}"
    columns = _columns_of(datasets, ep.dataset, f"{where}.dataset")
    _check_columns(columns, ep.keys, ep.dataset, f"{where}.keys")
    if ep.columns is not None:
        _check_columns(columns, ep.columns, ep.dataset, f"{where}.columns")
    entry: dict[str, Any] = {"type": "lookup", "dataset": ep.dataset, "keys": list(ep.keys)}
    if ep.columns is not None:
        entry["columns"] = list(ep.columns)
    entry.update(ep.policies)
    for i, q in enumerate(ep.test_queries or []):
        if not isinstance(q.get("data"), dict):
            raise CompileError(f"{where}.test_queries[{i}]: a lookup query is {{data: {{key: value}}}}")
    return entry


def _check_enrich(eid: str, enrich: list[dict[str, Any]], datasets: dict[str, dict[str, Any]]) -> None:
    for i, e in enumerate(enrich):
        where = f"endpoints.{eid}.enrich[{i}]"
        if "table" in e:  # a table of the node's database: checked when the node loads and plays test queries
            continue
        columns = _columns_of(datasets, e["dataset"], f"{where}.dataset")
        _check_columns(columns, e["keys"], e["dataset"], f"{where}.keys")
        _check_columns(columns, e["columns"], e["dataset"], f"{where}.columns")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def compiler_info(boosters: bool = False) -> dict[str, Any]:
    names = LIBRARIES + (BOOSTER_LIBRARIES if boosters else ())
    return {
        "apinode": _version("apinode") or "0.1.0",
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in names},
    }
