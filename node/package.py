"""The package format: the one contract between `compiler/` and `node/`.

A package (`.apz`) is a zip file:

    manifest.json            what the package holds (see :class:`Manifest`), versioned
    models/<endpoint>.onnx   one ONNX model per prediction endpoint
    datasets/<name>.<ext>    bundled datasets (csv or parquet), typed by the manifest's `schema`
    sqlite/<service>.db      the datasets as one SQLite database (when a sql endpoint uses it)
    code/...                 the service's Python code (function and custom-prediction endpoints)
    folders/<name>/...       managed folders of function and custom-prediction endpoints
    tests/<endpoint>.json    the endpoint's test queries (a JSON list of request bodies)

A `sql` endpoint's entry is `{"type": "sql", "statements": [SQL, ...]}` with either
`"database": "sqlite/<service>.db"` (a file of the package) or `"connection": NAME` (a name
the node maps to a real database in its own configuration: a package never holds a DSN).
Statements name their parameters `:name` (:mod:`node.sqlparams` reads them).

`manifest.json` lists every other file with its size and sha256; a package whose files do
not match, that holds a file the manifest does not list, whose paths (of its members or in
its manifest) leave the package, or that inflates suspiciously (a zip bomb) is refused
with a :class:`PackageError` that says which file and why. The compiler writes packages
with :func:`write_package`; the node verifies and unpacks them with :func:`extract_package`
(pushes and packages given on the command line) and re-validates the manifest of an
unpacked generation with :func:`load_extracted` whenever it loads one.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from node.sqlparams import SqlTextError
from node.sqlparams import parse as parse_sql

FORMAT = "apinode-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Always `fullmatch`: a `$` would match before a final newline ("evil\n")
ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
FEATURE_TYPES = ("float", "int", "string", "bool")
ONNX_TYPES = ("float", "double", "int64", "string", "bool")
ENDPOINT_TYPES = ("prediction", "function", "lookup", "custom-prediction", "sql")
COLUMN_TYPES = ("int", "float", "string", "bool", "date", "datetime")  # of a bundled dataset's columns
# Policies of lookup endpoints and enrichment (the first is the default; node/lookup.py says what they do)
LOOKUP_POLICIES = {"on_no_match": ("null", "fail"), "on_multiple": ("first", "null", "fail")}
ENRICH_POLICIES = {
    "on_missing_key": ("fail", "ignore", "continue"),
    "on_no_match": ("ignore", "fail", "continue"),
    "on_multiple": ("ignore", "fail", "first"),
}
TASKS = ("binary", "multiclass", "regression")
MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_RATIO = 200  # zip bomb guard: uncompressed/compressed, per member and for the whole package
BOMB_FLOOR = 16 * 1024**2  # ... once the member (or the package) inflates past this
MAX_FILES = 100_000
MAX_MANIFEST_BYTES = 16 * 1024**2
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# What reading a crafted archive can raise besides BadZipFile: corrupt deflate streams,
# truncated members, unsupported or encrypted compression, nonsense offsets.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class PackageError(ValueError):
    """A package that cannot be used, with a message that says why."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    type: str  # float | int | string | bool: what callers send
    onnx_type: str  # float | double | int64 | string | bool: the ONNX input's element type
    nullable: bool  # null is a missing value the model imputes


@dataclass(frozen=True, slots=True)
class ModelSpec:
    path: str
    # "columns": one ONNX input [N,1] per feature, named like it;
    # "matrix": one input `input_name` [N, n_features] of `onnx_type` of the first feature.
    input_mode: str
    input_name: str
    label_output: str | None
    proba_output: str | None
    value_output: str | None


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    id: str
    type: str
    raw: dict[str, Any]  # the endpoint's manifest entry, for kinds that need more
    task: str | None = None
    features: tuple[FeatureSpec, ...] = ()
    classes: tuple[Any, ...] | None = None
    model: ModelSpec | None = None
    test_queries: str | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    # prediction: the explanation settings (None: a package from before explanations)
    explanations: dict[str, Any] | None = None
    # binary classifier: sorted positive-class probabilities over the sample rows
    proba_percentiles: tuple[float, ...] | None = None
    # binary: the index in `classes` of the class probaPercentile and explanations are about
    positive: int = 1

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


@dataclass(frozen=True, slots=True)
class Manifest:
    service: str
    version: str
    endpoints: dict[str, EndpointSpec]
    files: dict[str, dict[str, Any]]
    raw: dict[str, Any]


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise PackageError(f"manifest.json: {message}")


def _safe_member(name: Any) -> str:
    """A relative path that stays inside the package, or PackageError."""
    if not isinstance(name, str) or not name:
        raise PackageError(f"package path {name!r} is not a file name")
    p = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise PackageError(f"package path {name!r} points outside the package")
    if not p.parts or _BAD_CHARS.search(name):
        raise PackageError(f"package path {name!r} is not a valid file name")
    if len(name) > 1024 or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in p.parts):
        raise PackageError(f"package path {name[:64]!r}... is too long")
    return str(p)


def parse_manifest(data: dict[str, Any]) -> Manifest:
    _require(isinstance(data, dict), "not a JSON object")
    _require(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    fv = data.get("format_version")
    _require(
        fv == FORMAT_VERSION,
        f"unsupported format_version {fv!r} (this node reads {FORMAT_VERSION})",
    )
    service, version = data.get("service"), data.get("version")
    if not (isinstance(service, str) and ID_RE.fullmatch(service)):
        raise PackageError(f"manifest.json: bad service id {service!r}")
    if not (isinstance(version, str) and ID_RE.fullmatch(version)):
        raise PackageError(f"manifest.json: bad version {version!r}")
    files = data.get("files")
    if not isinstance(files, dict):
        raise PackageError("manifest.json: 'files' must be an object")
    _require(len(files) <= MAX_FILES, f"'files' lists {len(files)} files; the limit is {MAX_FILES}")
    for name, meta in files.items():
        _safe_member(name)
        _require(
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and bool(_SHA256_RE.fullmatch(meta["sha256"]))
            and type(meta.get("size")) is int
            and meta["size"] >= 0,
            f"files[{name!r}] needs sha256 (64 hex digits) and size (bytes)",
        )
    _no_file_in_the_way(files)
    eps = data.get("endpoints")
    if not isinstance(eps, dict) or not eps:
        raise PackageError("manifest.json: 'endpoints' must be a non-empty object")
    _check_datasets(data.get("datasets"), files)
    datasets = data.get("datasets") or {}
    endpoints = {eid: _parse_endpoint(eid, e, files, datasets) for eid, e in eps.items()}
    _check_api_keys(data.get("api_keys"))
    return Manifest(service=service, version=version, endpoints=endpoints, files=files, raw=data)


def _no_file_in_the_way(files: dict[str, Any]) -> None:
    """A path cannot be both a file and a folder of the package (`code` and `code/x.py`)."""
    names = {str(PurePosixPath(n)) for n in files}
    for name in names:
        for parent in PurePosixPath(name).parents:
            if str(parent) in names:
                raise PackageError(f"manifest.json: {str(parent)!r} is both a file and a folder of the package")


def _check_datasets(datasets: Any, files: dict[str, Any]) -> None:
    if datasets is None:
        return
    _require(isinstance(datasets, dict), "'datasets' must be an object")
    for name, d in datasets.items():
        _require(isinstance(d, dict), f"datasets.{name} must be an object")
        path = d.get("path")
        _require(isinstance(path, str) and path in files, f"datasets.{name}.path {path!r} is not a file of the package")
        _require(d.get("format") in ("csv", "parquet"), f"datasets.{name}.format must be csv or parquet")
        schema = d.get("schema")
        _require(
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


def dataset_columns(datasets: dict[str, Any], name: str) -> list[str] | None:
    """The column names of a bundled dataset, as its manifest entry lists them (None: unknown)."""
    d = datasets.get(name) or {}
    if isinstance(d.get("schema"), list):
        return [c["name"] for c in d["schema"]]
    cols = d.get("columns")
    return list(cols) if isinstance(cols, list) else None


def _check_lookup(where: str, e: dict[str, Any], datasets: dict[str, Any]) -> None:
    ds = e.get("dataset")
    if not (isinstance(ds, str) and ds in datasets):
        raise PackageError(f"manifest.json: {where}.dataset {ds!r} is not a dataset of the package")
    columns = dataset_columns(datasets, ds)
    keys, cols = e.get("keys"), e.get("columns")
    if not (isinstance(keys, list) and bool(keys) and all(isinstance(k, str) for k in keys)):
        raise PackageError(f"manifest.json: {where}.keys must be a non-empty list of column names")
    _require(cols is None or (isinstance(cols, list) and all(isinstance(c, str) for c in cols)), f"{where}.columns")
    for c in [*keys, *(cols or ())]:
        _require(columns is None or c in columns, f"{where}: dataset {ds!r} has no column {c!r}")
    for policy, allowed in LOOKUP_POLICIES.items():
        _require(e.get(policy, allowed[0]) in allowed, f"{where}.{policy} must be one of {allowed}")


def _check_enrich(where: str, e: dict[str, Any], datasets: dict[str, Any]) -> None:
    entries = e.get("enrich")
    if entries is None:
        return
    _require(isinstance(entries, list), f"{where}.enrich must be a list")
    for i, x in enumerate(entries):
        w = f"{where}.enrich[{i}]"
        _require(isinstance(x, dict), f"{w} must be an object")
        ds = x.get("dataset")
        if "table" in x:  # a table of a database the node connects to: its columns are unknown here
            _require(ds is None, f"{w} names both a dataset and a table")
            table, conn = x.get("table"), x.get("connection")
            _require(
                isinstance(table, str) and bool(_TABLE_RE.fullmatch(table)),
                f"{w}.table {table!r} is not a table name ([schema.]name, letters, digits and '_')",
            )
            _require(isinstance(conn, str) and bool(ID_RE.fullmatch(conn)), f"{w}.connection {conn!r} is not a name")
            columns = None
        elif not (isinstance(ds, str) and ds in datasets):
            raise PackageError(f"manifest.json: {w}.dataset {ds!r} is not a dataset of the package")
        else:
            columns = dataset_columns(datasets, ds)
        for part in ("keys", "columns"):
            m = x.get(part)
            _require(
                isinstance(m, dict)
                and bool(m)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()),
                f"{w}.{part} must be a non-empty object of dataset column -> feature name",
            )
            for c in m:
                _require(columns is None or c in columns, f"{w}.{part}: dataset {ds!r} has no column {c!r}")
        for policy, allowed in ENRICH_POLICIES.items():
            _require(x.get(policy, allowed[0]) in allowed, f"{w}.{policy} must be one of {allowed}")
        _require(isinstance(x.get("override", False), bool), f"{w}.override must be true or false")


def _check_api_keys(keys: Any) -> None:
    if keys is None:
        return
    _require(isinstance(keys, list), "'api_keys' must be a list of {id, sha256}")
    for i, k in enumerate(keys):
        _require(
            isinstance(k, dict)
            and isinstance(k.get("id", ""), str)
            and isinstance(k.get("sha256"), str)
            and bool(_SHA256_RE.fullmatch(k["sha256"])),
            f"api_keys[{i}] must be {{id, sha256 (64 hex digits)}}",
        )


def _check_code(where: str, e: dict[str, Any], files: dict[str, Any]) -> None:
    """The code of a function endpoint is a listed .py file under its root, and its folders
    are inside the package: a worker imports and reads exactly these paths."""
    code = e.get("code")
    if not isinstance(code, dict):
        raise PackageError(f"manifest.json: {where}.code must be an object")
    path, root = code.get("path"), code.get("root", "code")
    attr = "class" if e.get("type") == "custom-prediction" else "function"
    function = code.get(attr)
    if not (isinstance(path, str) and path in files and path.endswith(".py")):
        raise PackageError(f"manifest.json: {where}.code.path {path!r} is not a .py file of the package")
    try:
        root = _safe_member(root)
    except PackageError as exc:
        raise PackageError(f"manifest.json: {where}.code.root: {exc}") from None
    _require(
        PurePosixPath(root) in PurePosixPath(path).parents,
        f"{where}.code.path {path!r} is not under its root {root!r}",
    )
    _require(
        isinstance(function, str) and function.isidentifier(),
        f"{where}.code.{attr} {function!r} is not a Python name",
    )
    folders = e.get("folders", [])
    _require(isinstance(folders, list), f"{where}.folders must be a list of package paths")
    for f in folders:
        try:
            _safe_member(f)
        except PackageError as exc:
            raise PackageError(f"manifest.json: {where}.folders: {exc}") from None


def _check_sql(where: str, e: dict[str, Any], files: dict[str, Any]) -> None:
    statements: list[Any] = e.get("statements") or []
    _require(
        isinstance(statements, list) and bool(statements) and all(isinstance(s, str) and s.strip() for s in statements),
        f"{where}.statements must be a non-empty list of SQL statements",
    )
    for i, sql in enumerate(statements):
        try:
            parse_sql(sql)
        except SqlTextError as exc:
            raise PackageError(f"manifest.json: {where}.statements[{i}]: {exc}") from None
    database, connection = e.get("database"), e.get("connection")
    _require((database is None) != (connection is None), f"{where} needs one of 'database' and 'connection'")
    if database is not None:
        _require(
            isinstance(database, str) and database in files,
            f"{where}.database {database!r} is not a file of the package",
        )
    else:
        _require(
            isinstance(connection, str) and bool(ID_RE.fullmatch(connection)),
            f"{where}.connection {connection!r} is not a connection name ([A-Za-z0-9_-]+)",
        )


def _parse_endpoint(eid: str, e: Any, files: dict[str, Any], datasets: dict[str, Any]) -> EndpointSpec:
    where = f"endpoints.{eid}"
    _require(bool(ID_RE.fullmatch(eid)), f"bad endpoint id {eid!r}")
    _require(isinstance(e, dict), f"{where} must be an object")
    etype = e.get("type")
    _require(etype in ENDPOINT_TYPES, f"{where}.type {etype!r} is not one of {ENDPOINT_TYPES}")
    tq = e.get("test_queries")
    _require(
        tq is None or (isinstance(tq, str) and tq in files), f"{where}.test_queries {tq!r} is not a file of the package"
    )
    pool = e.get("pool") or {}
    _require(isinstance(pool, dict), f"{where}.pool must be an object")
    if etype == "sql":
        _check_sql(where, e, files)
        return EndpointSpec(id=eid, type=etype, raw=e, test_queries=tq, pool=pool)
    if etype == "lookup":
        _check_lookup(where, e, datasets)
        return EndpointSpec(id=eid, type=etype, raw=e, test_queries=tq, pool=pool)
    if etype != "function":
        _check_enrich(where, e, datasets)
    if etype == "function":
        _check_code(where, e, files)
        return EndpointSpec(id=eid, type=etype, raw=e, test_queries=tq, pool=pool)
    if etype == "custom-prediction":
        _check_code(where, e, files)
        return _custom_prediction(eid, e, where, tq, pool)
    task = e.get("task")
    _require(task in TASKS, f"{where}.task {task!r} is not one of {TASKS}")
    feats = []
    feature_list = e.get("features") or []
    _require(isinstance(feature_list, list), f"{where}.features must be a list")
    for i, f in enumerate(feature_list):
        _require(isinstance(f, dict), f"{where}.features[{i}] must be an object")
        _require(f.get("type") in FEATURE_TYPES, f"{where}.features[{i}].type {f.get('type')!r}")
        _require(
            f.get("onnx_type") in ONNX_TYPES,
            f"{where}.features[{i}].onnx_type {f.get('onnx_type')!r}",
        )
        _require(isinstance(f.get("name"), str), f"{where}.features[{i}].name")
        feats.append(FeatureSpec(f["name"], f["type"], f["onnx_type"], bool(f.get("nullable", False))))
    _require(len(feats) > 0, f"{where}.features is empty")
    classes = e.get("classes")
    if task == "regression":
        _require(classes is None, f"{where}: a regression has no classes")
    else:
        _require(isinstance(classes, list) and len(classes) >= 2, f"{where}.classes needs >= 2 labels")
        _require(
            all(isinstance(c, str | int | float) for c in classes) and len(set(classes)) == len(classes),
            f"{where}.classes must be distinct strings, numbers or booleans",
        )
    m = e.get("model")
    _require(isinstance(m, dict), f"{where}.model must be an object")
    path = m.get("path")
    _require(isinstance(path, str) and path in files, f"{where}.model.path {path!r} is not a file of the package")
    _require(m.get("input_mode") in ("columns", "matrix"), f"{where}.model.input_mode")
    for key in ("input_name", "label_output", "proba_output", "value_output"):
        _require(m.get(key) is None or isinstance(m.get(key), str), f"{where}.model.{key} must be a string")
    model = ModelSpec(
        path=m["path"],
        input_mode=m["input_mode"],
        input_name=m.get("input_name") or "input",
        label_output=m.get("label_output"),
        proba_output=m.get("proba_output"),
        value_output=m.get("value_output"),
    )
    if task == "regression":
        _require(
            model.value_output is not None,
            f"{where}.model.value_output is required for a regression",
        )
    else:
        _require(
            model.proba_output is not None,
            f"{where}.model.proba_output is required for a classifier",
        )
    return EndpointSpec(
        id=eid,
        type=etype,
        raw=e,
        task=task,
        features=tuple(feats),
        classes=tuple(classes) if classes is not None else None,
        model=model,
        test_queries=tq,
        pool=pool,
        explanations=_explanations(e.get("explanations"), where, files),
        proba_percentiles=_percentiles(e.get("proba_percentiles"), where, task),
        positive=_positive(e, where, task, classes),
    )


def _positive(e: dict[str, Any], where: str, task: str, classes: Any) -> int:
    if "positive_class" not in e:
        return 1
    _require(task == "binary", f"{where}.positive_class: only a binary classifier has one")
    _require(e["positive_class"] in classes, f"{where}.positive_class {e['positive_class']!r} is not one of classes")
    return int(classes.index(e["positive_class"]))


_EXPLANATION_KEYS = {"enabled": bool, "by_default": bool, "method": str, "n_explanations": int}
_EXPLANATION_KEYS.update(mc_steps=int, max_mc_steps=int, background=str)


def _explanations(x: Any, where: str, files: dict[str, Any]) -> dict[str, Any] | None:
    """`explanations`: the endpoint's settings; `background` names the package file of
    sample rows the worker explains against (absent: compiled without a sample)."""
    if x is None:
        return None
    _require(isinstance(x, dict), f"{where}.explanations must be an object")
    for key, kind in _EXPLANATION_KEYS.items():
        v = x.get(key)
        if key == "background":
            _require(v is None or v in files, f"{where}.explanations.background {v!r} is not a file of the package")
        elif kind is int:
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{where}.explanations.{key}")
        else:
            _require(isinstance(v, kind), f"{where}.explanations.{key} must be a {kind.__name__}")
    _require(x["method"] in ("SHAPLEY", "ICE"), f"{where}.explanations.method {x['method']!r}")
    return dict(x)


def _percentiles(p: Any, where: str, task: str) -> tuple[float, ...] | None:
    if p is None:
        return None
    _require(task == "binary", f"{where}.proba_percentiles: only a binary classifier has them")
    _require(
        isinstance(p, list) and len(p) > 0 and all(isinstance(v, int | float) for v in p),
        f"{where}.proba_percentiles must be a non-empty list of numbers",
    )
    _require(all(a <= b for a, b in itertools.pairwise(p)), f"{where}.proba_percentiles must be sorted")
    return tuple(float(v) for v in p)


def _custom_prediction(eid: str, e: dict[str, Any], where: str, tq: str | None, pool: dict[str, Any]) -> EndpointSpec:
    """A class in the service's code; declared features (optional) are validated like a
    model's, and reach `predict(df)` as its columns."""
    task = e.get("task")
    _require(task is None or task in TASKS, f"{where}.task {task!r} is not one of {TASKS}")
    feats = []
    feature_list = e.get("features") or []
    _require(isinstance(feature_list, list), f"{where}.features must be a list")
    for i, f in enumerate(feature_list):
        _require(
            isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("type") in FEATURE_TYPES,
            f"{where}.features[{i}] must be {{name, type in {FEATURE_TYPES}}}",
        )
        # no ONNX input behind it: nulls stay None for the user's DataFrame
        feats.append(FeatureSpec(f["name"], f["type"], "none", bool(f.get("nullable", True))))
    classes = e.get("classes")
    _require(
        classes is None or (isinstance(classes, list) and all(isinstance(c, str | int | float) for c in classes)),
        f"{where}.classes must be a list of labels",
    )
    return EndpointSpec(
        id=eid,
        type="custom-prediction",
        raw=e,
        task=task,
        features=tuple(feats),
        classes=tuple(classes) if classes is not None else None,
        test_queries=tq,
        pool=pool,
    )


def column_type_of(t: Any) -> str:
    """The manifest's column type (`COLUMN_TYPES`) of an Arrow data type."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    return "string"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_package(out: Path, manifest: dict[str, Any], files: dict[str, bytes | Path]) -> str:
    """Writes a package atomically; fills `manifest["files"]`. Returns the package's sha256."""
    listing: dict[str, dict[str, Any]] = {}
    for name, content in files.items():
        _safe_member(name)
        data = content.read_bytes() if isinstance(content, Path) else content
        listing[name] = {"sha256": sha256_bytes(data), "size": len(data)}
    manifest = {**manifest, "files": listing}
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    parse_manifest(manifest)  # never write what the node would refuse
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".apz-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            for name, content in files.items():
                if isinstance(content, Path):
                    z.write(content, name)
                else:
                    z.writestr(name, content)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(out)


def read_manifest(package: Path | bytes) -> Manifest:
    """Reads and validates the manifest of a package without unpacking it."""
    with _open_zip(io.BytesIO(package) if isinstance(package, bytes) else package) as z:
        return _manifest_of(z)


def _open_zip(package: Path | io.BytesIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(package)
    except (*_ZIP_ERRORS, OSError, ValueError) as exc:
        raise PackageError(f"not a package: corrupt zip ({exc})") from exc


def _manifest_of(z: zipfile.ZipFile) -> Manifest:
    try:
        info = z.getinfo(MANIFEST)
    except KeyError:
        raise PackageError("not a package: no manifest.json") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"manifest.json is larger than {MAX_MANIFEST_BYTES // 1024**2} MiB")
    try:
        raw = z.read(info)
    except _ZIP_ERRORS as exc:
        raise PackageError(f"manifest.json cannot be read: {exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PackageError(f"manifest.json is not valid JSON: {exc}") from exc
    return parse_manifest(data)


def _check_members(z: zipfile.ZipFile, manifest: Manifest) -> None:
    """Every member of the archive is inside the package and listed; every listed file is
    there with its size; nothing inflates like a zip bomb. From the archive's directory
    alone: nothing is inflated yet."""
    infos = z.infolist()
    if len(infos) > MAX_FILES + 1:
        raise PackageError(f"package holds {len(infos)} files; the limit is {MAX_FILES}")
    for member in infos:
        _safe_member(member.filename)
    members = {i.filename: i for i in infos if not i.is_dir()}
    extra = set(members) - set(manifest.files) - {MANIFEST}
    if extra:
        raise PackageError(f"package holds files the manifest does not list: {sorted(extra)[:5]}")
    total = compressed = 0
    for name, meta in manifest.files.items():
        info = members.get(name)
        if info is None:
            raise PackageError(f"package lacks {name}, listed in its manifest")
        if info.file_size != meta["size"]:
            raise PackageError(f"{name}: size {info.file_size} != {meta['size']} in the manifest")
        if info.file_size > BOMB_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
            raise PackageError(
                f"{name}: inflates {info.file_size} bytes from {info.compress_size} "
                f"(more than {MAX_RATIO}x): refused as a zip bomb"
            )
        total += info.file_size
        compressed += info.compress_size
    if total > MAX_UNPACKED_BYTES:
        raise PackageError(f"package unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} limit")
    if total > BOMB_FLOOR and total > MAX_RATIO * compressed:
        raise PackageError(
            f"package inflates {total} bytes from {compressed} (more than {MAX_RATIO}x): refused as a zip bomb"
        )


def extract_package(package: Path, dest: Path) -> Manifest:
    """Verifies a package and unpacks it into `dest` (created atomically, replaced if present).

    Refuses: corrupt zips, bad manifests, members outside the package or not in the
    manifest, size or sha256 mismatches, and archives that inflate suspiciously (zip bombs).
    """
    with _open_zip(package) as z:
        manifest = _manifest_of(z)
        _check_members(z, manifest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            for name, meta in manifest.files.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                try:
                    # zipfile stops at the declared size, so a member cannot inflate past it
                    with z.open(name) as src, open(target, "wb") as out:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            out.write(chunk)
                except _ZIP_ERRORS as exc:
                    raise PackageError(f"{name}: cannot be unpacked ({exc})") from None
                if h.hexdigest() != meta["sha256"].lower():
                    raise PackageError(f"{name}: sha256 mismatch (package corrupted or tampered with)")
            (tmp / MANIFEST).write_bytes(z.read(MANIFEST))
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def load_extracted(dest: Path) -> Manifest:
    """The manifest of an unpacked generation, validated again: the data dir is not trusted
    more than an upload."""
    try:
        return parse_manifest(orjson.loads((dest / MANIFEST).read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise PackageError(f"{dest / MANIFEST}: not valid JSON: {exc}") from None
    except PackageError as exc:
        raise PackageError(f"{dest}: {exc}") from None
