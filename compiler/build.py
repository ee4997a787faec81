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

from compiler.console import Reporter
from compiler.errors import CompileError
from compiler.functions import FunctionCode, check_function, collect_code
from compiler.inputs import read_table
from compiler.parity import ParityResult
from compiler.spec import (
    DATASET_FORMATS,
    SERVICE_FILE,
    PredictionEndpoint,
    ServiceSpec,
    SqlEndpoint,
    read_service,
)
from node.package import PackageError, write_package

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
    sqlite_db = _bundled_database(spec, files, rep)
    for eid, ep in spec.endpoints.items():
        queries: list[dict[str, Any]] | None
        if isinstance(ep, PredictionEndpoint):
            from compiler.prediction import build_prediction

            built = build_prediction(ep, folder, rep)
            entry, queries = built.entry, built.test_queries
            files[entry["model"]["path"]] = built.onnx
            parity[eid] = built.parity
            boosters = boosters or built.booster
        elif isinstance(ep, SqlEndpoint):
            entry, queries = _sql_entry(spec, ep, sqlite_db, rep), ep.test_queries
        else:
            rep.step(f"checking {eid}: {ep.file.name}:{ep.function}()")
            code = check_function(ep, folder)
            codes.append((eid, code))
            entry = {
                "type": "function",
                "code": {"path": code.path, "root": "code", "function": code.function},
            }
            queries = ep.test_queries
        if queries is not None:
            entry["test_queries"] = f"tests/{eid}.json"
            files[entry["test_queries"]] = json.dumps(queries, indent=2).encode()
        if ep.pool:
            entry["pool"] = dict(ep.pool)
        endpoints[eid] = entry
    if codes:
        files.update(collect_code(codes))
    manifest: dict[str, Any] = {
        "service": spec.service,
        "version": spec.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "compiler": compiler_info(boosters),
        "datasets": _datasets(spec, files, rep),
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
    from node.package import sha256_bytes

    listing = {}
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        listing[name] = {"sha256": sha256_bytes(data), "size": len(data)}
    return listing


def _datasets(spec: ServiceSpec, files: dict[str, bytes | Path], rep: Reporter) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, path in spec.datasets.items():
        rep.step(f"reading dataset {name}: {path.relative_to(spec.folder)}")
        fmt = DATASET_FORMATS[path.suffix.lower()]
        table = read_table(path, f"datasets.{name}")
        target = f"datasets/{name}{'.csv' if fmt == 'csv' else '.parquet'}"
        files[target] = path
        out[name] = {
            "path": target,
            "format": fmt,
            "rows": len(table),
            "columns": [str(c) for c in table.columns],
        }
    return out


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
