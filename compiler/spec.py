"""`service.yaml` -> :class:`ServiceSpec`: every key checked, every path resolved.

The known keys live in the tables below, one per level, so that a new endpoint type or a
new top-level section is one entry here plus its parser. Unknown keys are errors that name
the key and list the known ones: a typo must never pass silently. Errors carry the YAML
line of the offending key (the loader remembers where each key was).
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apz.sqlparams import SqlTextError
from apz.sqlparams import parse as parse_sql
from apz.vocab import ENRICH_POLICIES, FEATURE_TYPES, ID_RE, LOOKUP_POLICIES, TASKS
from compiler.errors import CompileError

SERVICE_FILE = "service.yaml"
DEFAULT_PARITY_TOLERANCE = 1e-4

TOP_LEVEL_KEYS = ("service", "version", "datasets", "endpoints", "api_keys", "query_log")
QUERY_LOG_KEYS = ("enabled", "sample_rate", "exclude")
ENDPOINT_KEYS: dict[str, tuple[str, ...]] = {
    "prediction": (
        "type",
        "model",
        "features",
        "sample",
        "test_queries",
        "pool",
        "parity_tolerance",
        "enrich",
        "explanations",
        "positive_class",
    ),
    "function": ("type", "file", "function", "folders", "test_queries", "pool"),
    "lookup": ("type", "dataset", "keys", "columns", "on_no_match", "on_multiple", "test_queries"),
    "custom-prediction": (
        "type",
        "file",
        "class",
        "features",
        "task",
        "classes",
        "folders",
        "enrich",
        "test_queries",
        "pool",
    ),
    "sql": ("type", "database", "connection", "statements", "test_queries", "pool"),
}
ALL_ENDPOINT_KEYS = tuple(dict.fromkeys(k for keys in ENDPOINT_KEYS.values() for k in keys))
ENRICH_KEYS = ("dataset", "table", "connection", "keys", "columns", "override", *ENRICH_POLICIES)
SQL_DATABASES = ("bundled",)  # `database:` values; a referenced database is `connection: NAME`
FEATURE_KEYS = ("type", "nullable")
# The node's pool settings (node/supervisor/settings.py); the compiler checks their shape
# and floor <= cruise <= ceil the way the node will, with the node's defaults.
POOL_KEYS = (
    "floor",
    "ceil",
    "cruise",
    "queue",
    "timeout",
    "max_run_ms",
    "max_batch",
    "idle_grace_ms",
    "start_timeout_ms",
    "grow_after_ms",
)
POOL_DEFAULTS = {"floor": 1, "cruise": 2, "ceil": 8}
DATASET_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True, slots=True)
class FeatureDecl:
    name: str
    type: str
    nullable: bool | None  # None: let the compiler decide from the model


@dataclass(frozen=True, slots=True)
class PredictionEndpoint:
    id: str
    model: Path
    features: tuple[FeatureDecl, ...] | None
    sample: Path | None
    test_queries: list[dict[str, Any]] | None
    pool: dict[str, int]
    parity_tolerance: float
    enrich: list[dict[str, Any]] = field(default_factory=list)  # manifest-shaped entries
    explanations: dict[str, Any] = field(default_factory=dict)  # only the keys given
    positive_class: Any = None  # binary: the class probaPercentile and explanations are about


@dataclass(frozen=True, slots=True)
class FunctionEndpoint:
    id: str
    file: Path
    function: str
    test_queries: list[dict[str, Any]] | None
    pool: dict[str, int]
    folders: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class LookupEndpoint:
    id: str
    dataset: str
    keys: tuple[str, ...]
    columns: tuple[str, ...] | None  # None: every column
    policies: dict[str, str]
    test_queries: list[dict[str, Any]] | None
    pool: dict[str, int] = field(default_factory=dict)  # lookups have no workers


@dataclass(frozen=True, slots=True)
class CustomPredictionEndpoint:
    id: str
    file: Path
    cls: str
    features: tuple[FeatureDecl, ...] | None
    task: str | None
    classes: list[Any] | None
    folders: tuple[Path, ...]
    enrich: list[dict[str, Any]]
    test_queries: list[dict[str, Any]] | None
    pool: dict[str, int]


@dataclass(frozen=True, slots=True)
class SqlEndpoint:
    id: str
    database: str | None  # "bundled": the service's datasets as one SQLite database
    connection: str | None  # a name the node maps to a real database
    statements: tuple[str, ...]
    test_queries: list[dict[str, Any]] | None
    pool: dict[str, int]
    line: int  # of the endpoint in service.yaml, for errors found while building


Endpoint = PredictionEndpoint | FunctionEndpoint | LookupEndpoint | CustomPredictionEndpoint | SqlEndpoint


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    folder: Path
    service: str
    version: str
    datasets: dict[str, Path] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    api_keys: list[dict[str, str]] = field(default_factory=list)  # [{"id", "sha256"}]: never the key itself
    query_log: dict[str, Any] | None = None


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _Invalid(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.lines = {}
    data.line = node.start_mark.line + 1
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            raise _Invalid(line, "a mapping key must be a plain value")
        if key in data:
            raise _Invalid(line, f"duplicate key {key!r}")
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = line


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CompileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CompileError(f"{path} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except _Invalid as exc:
        raise CompileError(f"{path}: line {exc.line}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or "invalid YAML"
        raise CompileError(f"{path}: {where}YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise CompileError(f"{path}: YAML syntax error: {exc}") from None


class _Reader:
    """Validation helpers that know the file and the line of each key."""

    def __init__(self, folder: Path, path: Path) -> None:
        self.folder, self.path = folder, path

    def fail(self, parent: Any, key: Any, where: str, message: str) -> CompileError:
        line = parent.lines.get(key, parent.line) if isinstance(parent, _Map) else 0
        at = f"line {line}: " if line else ""
        return CompileError(f"{self.path}: {at}{where}: {message}")

    def mapping(self, parent: Any, key: Any, where: str) -> _Map:
        value = parent[key]
        if not isinstance(value, _Map):
            raise self.fail(parent, key, where, f"expected a mapping, got {_kind(value)}")
        return value

    def known(self, data: _Map, known: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in known:
                raise self.fail(
                    data, key, where, f"unknown key {key!r}{_hint(key, known)} (known keys: {', '.join(known)})"
                )

    def ident(self, parent: Any, key: Any, where: str) -> str:
        value = parent[key]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not ID_RE.fullmatch(value):
            raise self.fail(parent, key, where, f"must match [A-Za-z0-9_-]+, got {value!r}")
        return value

    def file(self, parent: Any, key: Any, where: str) -> Path:
        value = parent[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(parent, key, where, f"expected a file path, got {_kind(value)}")
        path = self.folder / value
        if not path.is_file():
            raise self.fail(parent, key, where, f"file not found: {path}")
        return path


def _hint(word: Any, choices: tuple[str, ...]) -> str:
    """`: did you mean 'type'?` when a close spelling exists, so the likely fix comes first."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def read_service(folder: Path) -> ServiceSpec:
    if not folder.is_dir():
        raise CompileError(f"no such service folder: {folder}")
    path = folder / SERVICE_FILE
    if not path.is_file():
        raise CompileError(f"no {SERVICE_FILE} in {folder} (expected {path})")
    doc = load_yaml(path)
    r = _Reader(folder, path)
    if not isinstance(doc, _Map):
        raise CompileError(f"{path}: expected a mapping of service settings, got {_kind(doc)}")
    r.known(doc, TOP_LEVEL_KEYS, "top level")
    for key in ("service", "version", "endpoints"):
        if key not in doc:
            raise CompileError(f"{path}: the key {key!r} is required")
    service, version = r.ident(doc, "service", "service"), r.ident(doc, "version", "version")
    datasets: dict[str, Path] = {}
    if doc.get("datasets") is not None:
        ds = r.mapping(doc, "datasets", "datasets")
        for name in ds:
            where = f"datasets.{name}"
            if not isinstance(name, str) or not ID_RE.fullmatch(name):
                raise r.fail(ds, name, "datasets", f"bad dataset name {name!r}")
            datasets[name] = r.file(ds, name, where)
            if datasets[name].suffix.lower() not in DATASET_FORMATS:
                raise r.fail(ds, name, where, "a dataset must be a .csv or .parquet file")
    eps = r.mapping(doc, "endpoints", "endpoints")
    if not eps:
        raise r.fail(doc, "endpoints", "endpoints", "at least one endpoint is required")
    endpoints: dict[str, Endpoint] = {}
    for eid in eps:
        if not isinstance(eid, str) or not ID_RE.fullmatch(eid):
            raise r.fail(eps, eid, "endpoints", f"bad endpoint id {eid!r} ([A-Za-z0-9_-]+)")
        endpoints[eid] = _endpoint(r, eps, eid)
    for eid, ep in endpoints.items():
        if isinstance(ep, SqlEndpoint) and ep.database == "bundled" and not datasets:
            raise r.fail(
                eps[eid], "database", f"endpoints.{eid}.database", "'bundled' builds a database from 'datasets:': none"
            )
    return ServiceSpec(folder, service, version, datasets, endpoints, _api_keys(r, doc), _query_log(r, doc))


def _api_keys(r: _Reader, doc: _Map) -> list[dict[str, str]]:
    """`api_keys: [KEY, ...]` or `[{id: ID, key: KEY}, ...]`; the package keeps sha256 only."""
    raw = doc.get("api_keys")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise r.fail(doc, "api_keys", "api_keys", "expected a list of keys or of {id, key}")
    out = []
    for i, item in enumerate(raw):
        kid, key = (
            (f"key{i}", item)
            if isinstance(item, str)
            else (item.get("id"), item.get("key"))
            if isinstance(item, dict)
            else (None, None)
        )
        if not isinstance(key, str) or len(key) < 8 or not isinstance(kid, str) or not kid:
            raise r.fail(doc, "api_keys", f"api_keys[{i}]", "each key needs an id and a key of at least 8 characters")
        out.append({"id": kid, "sha256": hashlib.sha256(key.encode()).hexdigest()})
    return out


def _query_log(r: _Reader, doc: _Map) -> dict[str, Any] | None:
    raw = doc.get("query_log")
    if raw is None:
        return None
    ql = r.mapping(doc, "query_log", "query_log")
    r.known(ql, QUERY_LOG_KEYS, "query_log")
    rate = ql.get("sample_rate", 1.0)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise r.fail(ql, "sample_rate", "query_log.sample_rate", "must be a number in [0, 1]")
    exclude = ql.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise r.fail(ql, "exclude", "query_log.exclude", "must be a list of feature names")
    return {"enabled": bool(ql.get("enabled", True)), "sample_rate": float(rate), "exclude": list(exclude)}


def _endpoint(r: _Reader, eps: _Map, eid: str) -> Endpoint:
    where = f"endpoints.{eid}"
    e = r.mapping(eps, eid, where)
    etype = e.get("type")
    if "type" not in e:
        # Without a type the keys cannot be checked against one kind's table, but a key no
        # kind knows is the likelier mistake (`typ: prediction`): name it, not the absent type.
        for key in e:
            if key not in ALL_ENDPOINT_KEYS:
                needs = f"an endpoint needs 'type:', one of {', '.join(ENDPOINT_KEYS)}"
                raise r.fail(e, key, where, f"unknown key {key!r}{_hint(key, ALL_ENDPOINT_KEYS)} ({needs})")
    if etype not in ENDPOINT_KEYS:
        line_key = "type" if "type" in e else eid
        parent = e if "type" in e else eps
        kinds = tuple(ENDPOINT_KEYS)
        got = f"{etype!r}{_hint(etype, kinds)}" if isinstance(etype, str) else _kind(etype)
        raise r.fail(parent, line_key, f"{where}.type", f"must be one of {', '.join(kinds)}, got {got}")
    r.known(e, ENDPOINT_KEYS[etype], where)
    return _PARSERS[etype](r, e, eid)


def _prediction(r: _Reader, e: _Map, eid: str) -> PredictionEndpoint:
    where = f"endpoints.{eid}"
    if "model" not in e:
        raise r.fail(e, "type", where, "a prediction endpoint needs 'model: <file>'")
    sample = r.file(e, "sample", f"{where}.sample") if e.get("sample") is not None else None
    if sample is not None and sample.suffix.lower() not in DATASET_FORMATS:
        raise r.fail(e, "sample", f"{where}.sample", "a sample must be a .csv or .parquet file")
    tol = e.get("parity_tolerance", DEFAULT_PARITY_TOLERANCE)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < 1:
        raise r.fail(e, "parity_tolerance", f"{where}.parity_tolerance", "must be in (0, 1)")
    return PredictionEndpoint(
        id=eid,
        model=r.file(e, "model", f"{where}.model"),
        features=_features(r, e, where) if e.get("features") is not None else None,
        sample=sample,
        test_queries=_test_queries(r, e, where, prediction=True),
        pool=_pool(r, e, where),
        parity_tolerance=float(tol),
        enrich=_enrich(r, e, where),
        explanations=_explanations(r, e, where),
        positive_class=e.get("positive_class"),
    )


EXPLANATION_KEYS = ("enabled", "by_default", "method", "n_explanations", "mc_steps", "max_mc_steps", "background_rows")
EXPLANATION_METHODS = ("SHAPLEY", "ICE")


def _explanations(r: _Reader, e: _Map, where: str) -> dict[str, Any]:
    """`explanations:` of a prediction endpoint: switches, defaults and the step cap."""
    if e.get("explanations") is None:
        return {}
    where = f"{where}.explanations"
    x = r.mapping(e, "explanations", where)
    r.known(x, EXPLANATION_KEYS, where)
    for key in ("enabled", "by_default"):
        if key in x and not isinstance(x[key], bool):
            raise r.fail(x, key, f"{where}.{key}", f"must be true or false, got {x[key]!r}")
    if "method" in x and x["method"] not in EXPLANATION_METHODS:
        raise r.fail(x, "method", f"{where}.method", f"must be one of {', '.join(EXPLANATION_METHODS)}")
    lows = {"n_explanations": 1, "mc_steps": 1, "max_mc_steps": 1, "background_rows": 1}
    for key, low in lows.items():
        v = x.get(key)
        if key in x and (not isinstance(v, int) or isinstance(v, bool) or v < low or v > 100_000):
            raise r.fail(x, key, f"{where}.{key}", f"must be an integer from {low} to 100000, got {v!r}")
    steps, cap = x.get("mc_steps", 100), x.get("max_mc_steps", 1000)
    if steps > cap:
        raise r.fail(x, "mc_steps", f"{where}.mc_steps", f"{steps} is above max_mc_steps ({cap})")
    return dict(x)


def _function(r: _Reader, e: _Map, eid: str) -> FunctionEndpoint:
    where = f"endpoints.{eid}"
    for key in ("file", "function"):
        if key not in e:
            raise r.fail(e, "type", where, f"a function endpoint needs '{key}:'")
    name = e["function"]
    if not isinstance(name, str) or not name.isidentifier():
        raise r.fail(e, "function", f"{where}.function", f"not a function name: {name!r}")
    path = r.file(e, "file", f"{where}.file")
    if path.suffix != ".py":
        raise r.fail(e, "file", f"{where}.file", f"expected a .py file, got {path.name}")
    return FunctionEndpoint(
        id=eid,
        file=path,
        function=name,
        test_queries=_test_queries(r, e, where, prediction=False),
        pool=_pool(r, e, where),
        folders=_folders(r, e, where),
    )


def _names(r: _Reader, parent: _Map, key: str, where: str) -> list[str]:
    """A column name or a list of them."""
    value = parent[key]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise r.fail(parent, key, where, f"expected a column name or a list of them, got {_kind(value)}")
    return list(names)


def _policies(r: _Reader, e: _Map, where: str, table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    out = {}
    for policy, allowed in table.items():
        if policy in e:
            if e[policy] not in allowed:
                raise r.fail(e, policy, f"{where}.{policy}", f"must be one of {', '.join(allowed)}, got {e[policy]!r}")
            out[policy] = e[policy]
    return out


def _lookup(r: _Reader, e: _Map, eid: str) -> LookupEndpoint:
    where = f"endpoints.{eid}"
    for key in ("dataset", "keys"):
        if key not in e:
            raise r.fail(e, "type", where, f"a lookup endpoint needs '{key}:'")
    if not isinstance(e["dataset"], str):
        raise r.fail(e, "dataset", f"{where}.dataset", f"expected a dataset name, got {_kind(e['dataset'])}")
    columns = _names(r, e, "columns", f"{where}.columns") if e.get("columns") is not None else None
    return LookupEndpoint(
        id=eid,
        dataset=e["dataset"],
        keys=tuple(_names(r, e, "keys", f"{where}.keys")),
        columns=tuple(columns) if columns is not None else None,
        policies=_policies(r, e, where, LOOKUP_POLICIES),
        test_queries=_test_queries(r, e, where, prediction=False),
    )


def _custom_prediction(r: _Reader, e: _Map, eid: str) -> CustomPredictionEndpoint:
    where = f"endpoints.{eid}"
    for key in ("file", "class"):
        if key not in e:
            raise r.fail(e, "type", where, f"a custom-prediction endpoint needs '{key}:'")
    name = e["class"]
    if not isinstance(name, str) or not name.isidentifier():
        raise r.fail(e, "class", f"{where}.class", f"not a class name: {name!r}")
    path = r.file(e, "file", f"{where}.file")
    if path.suffix != ".py":
        raise r.fail(e, "file", f"{where}.file", f"expected a .py file, got {path.name}")
    task = e.get("task")
    if task is not None and task not in TASKS:
        raise r.fail(e, "task", f"{where}.task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    classes = e.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str | int | float) for c in classes)
    ):
        raise r.fail(e, "classes", f"{where}.classes", "expected a list of labels")
    return CustomPredictionEndpoint(
        id=eid,
        file=path,
        cls=name,
        features=_features(r, e, where) if e.get("features") is not None else None,
        task=task,
        classes=_plain(classes),
        folders=_folders(r, e, where),
        enrich=_enrich(r, e, where),
        test_queries=_test_queries(r, e, where, prediction=True),
        pool=_pool(r, e, where),
    )


def _folders(r: _Reader, e: _Map, where: str) -> tuple[Path, ...]:
    """`folders: [path, ...]`: folders of the service, in the order the code sees them."""
    if e.get("folders") is None:
        return ()
    raw = e["folders"]
    if not isinstance(raw, list) or not all(isinstance(f, str) and f.strip() for f in raw):
        raise r.fail(e, "folders", f"{where}.folders", f"expected a list of folder paths, got {_kind(raw)}")
    out = []
    for i, f in enumerate(raw):
        path = (r.folder / f).resolve()
        try:
            path.relative_to(r.folder.resolve())
        except ValueError:
            raise r.fail(e, "folders", f"{where}.folders[{i}]", f"{f} is outside the service folder") from None
        if not path.is_dir():
            raise r.fail(e, "folders", f"{where}.folders[{i}]", f"not a folder: {r.folder / f}")
        out.append(path)
    return tuple(out)


def _enrich(r: _Reader, e: _Map, where: str) -> list[dict[str, Any]]:
    """`enrich:` entries, as the manifest holds them: `keys` and `columns` become
    {dataset column: feature} (a name or a list means the same name on both sides)."""
    if e.get("enrich") is None:
        return []
    raw = e["enrich"]
    items = [raw] if isinstance(raw, _Map) else raw
    if not isinstance(items, list) or not items:
        raise r.fail(e, "enrich", f"{where}.enrich", f"expected a list of lookups, got {_kind(raw)}")
    out = []
    for i, x in enumerate(items):
        w = f"{where}.enrich[{i}]"
        if not isinstance(x, _Map):
            raise r.fail(e, "enrich", w, f"expected a mapping, got {_kind(x)}")
        r.known(x, ENRICH_KEYS, w)
        if ("dataset" in x) == ("table" in x):
            raise r.fail(x, next(iter(x), "dataset"), w, "an enrichment needs one of 'dataset:' and 'table:'")
        for key in ("keys", "columns", *(("connection",) if "table" in x else ())):
            if key not in x:
                raise r.fail(x, next(iter(x), key), w, f"an enrichment needs '{key}:'")
        entry: dict[str, Any]
        if "dataset" in x:
            if not isinstance(x["dataset"], str):
                raise r.fail(x, "dataset", f"{w}.dataset", f"expected a dataset name, got {_kind(x['dataset'])}")
            entry = {"dataset": x["dataset"]}
        else:
            table = x["table"]
            if (
                not isinstance(table, str)
                or not all(p.isidentifier() for p in table.split("."))
                or table.count(".") > 1
            ):
                raise r.fail(x, "table", f"{w}.table", f"expected a table name ([schema.]name), got {_kind(table)}")
            entry = {"table": table, "connection": r.ident(x, "connection", f"{w}.connection")}
        for key in ("keys", "columns"):
            value = x[key]
            if isinstance(value, _Map):
                if not value or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                    raise r.fail(x, key, f"{w}.{key}", "expected {dataset column: feature name, ...}")
                entry[key] = dict(value)
            else:
                entry[key] = {n: n for n in _names(r, x, key, f"{w}.{key}")}
        if "override" in x and not isinstance(x["override"], bool):
            raise r.fail(x, "override", f"{w}.override", "must be true or false")
        if "override" in x:
            entry["override"] = x["override"]
        entry.update(_policies(r, x, w, ENRICH_POLICIES))
        out.append(entry)
    return out


def _sql(r: _Reader, e: _Map, eid: str) -> SqlEndpoint:
    where = f"endpoints.{eid}"
    has_db, has_conn = e.get("database") is not None, e.get("connection") is not None
    if has_db == has_conn:
        key = "database" if has_db else "type"
        raise r.fail(e, key, where, "an sql endpoint needs exactly one of 'database: bundled' and 'connection: <name>'")
    if has_db and e["database"] not in SQL_DATABASES:
        raise r.fail(
            e,
            "database",
            f"{where}.database",
            f"must be 'bundled' (a referenced database is 'connection: <name>'), got {_kind(e['database'])}",
        )
    if has_conn and ("://" in str(e["connection"]) or "=" in str(e["connection"])):  # never echo a DSN
        raise r.fail(
            e,
            "connection",
            f"{where}.connection",
            "expected a connection name, not a DSN (the node maps names to DSNs)",
        )
    connection = r.ident(e, "connection", f"{where}.connection") if has_conn else None
    raw = e.get("statements")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise r.fail(
            e, "statements" if "statements" in e else "type", f"{where}.statements", "needs a list of SQL statements"
        )
    names: set[str] = set()
    for i, sql in enumerate(raw):
        if not isinstance(sql, str) or not sql.strip():
            raise r.fail(e, "statements", f"{where}.statements[{i}]", f"expected an SQL statement, got {_kind(sql)}")
        try:
            names.update(parse_sql(sql).names)
        except SqlTextError as exc:
            raise r.fail(e, "statements", f"{where}.statements[{i}]", str(exc)) from None
    queries = _test_queries(r, e, where, prediction=False)
    for i, q in enumerate(queries or []):
        missing, unexpected = sorted(names - set(q)), sorted(set(q) - names)
        if missing or unexpected:
            what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unexpected)}"
            takes = ", ".join(sorted(names)) or "none"
            raise r.fail(
                e, "test_queries", f"{where}.test_queries[{i}]", f"{what} (the statements' parameters: {takes})"
            )
    return SqlEndpoint(
        id=eid,
        database=e.get("database"),
        connection=connection,
        statements=tuple(s.strip() for s in raw),
        test_queries=queries,
        pool=_pool(r, e, where),
        line=e.lines.get("statements", e.line),
    )


_PARSERS: dict[str, Callable[[_Reader, _Map, str], Endpoint]] = {
    "prediction": _prediction,
    "function": _function,
    "lookup": _lookup,
    "custom-prediction": _custom_prediction,
    "sql": _sql,
}


def _features(r: _Reader, e: _Map, where: str) -> tuple[FeatureDecl, ...]:
    feats = r.mapping(e, "features", f"{where}.features")
    if not feats:
        raise r.fail(e, "features", f"{where}.features", "is empty")
    out = []
    types = ", ".join(FEATURE_TYPES)
    for name, value in feats.items():
        fwhere = f"{where}.features.{name}"
        if not isinstance(name, str) or not name:
            raise r.fail(feats, name, f"{where}.features", f"bad feature name {name!r}")
        nullable: bool | None = None
        ftype = value
        if isinstance(value, _Map):
            r.known(value, FEATURE_KEYS, fwhere)
            ftype = value.get("type")
            if "nullable" in value:
                if not isinstance(value["nullable"], bool):
                    raise r.fail(value, "nullable", f"{fwhere}.nullable", "must be true or false")
                nullable = value["nullable"]
        if ftype not in FEATURE_TYPES:
            raise r.fail(feats, name, fwhere, f"type must be one of {types}, got {_kind(ftype)}")
        out.append(FeatureDecl(name, ftype, nullable))
    return tuple(out)


def _test_queries(r: _Reader, e: _Map, where: str, *, prediction: bool) -> list[dict[str, Any]] | None:
    if e.get("test_queries") is None:
        return None
    queries = e["test_queries"]
    qwhere = f"{where}.test_queries"
    if not isinstance(queries, list):
        raise r.fail(e, "test_queries", qwhere, f"expected a list, got {_kind(queries)}")
    for i, q in enumerate(queries):
        if not isinstance(q, dict):
            raise r.fail(e, "test_queries", f"{qwhere}[{i}]", f"expected a mapping, got {_kind(q)}")
        if prediction and not isinstance(q.get("features"), dict):
            raise r.fail(e, "test_queries", f"{qwhere}[{i}]", "a prediction query is {features: {...}}")
    return [_plain(q) for q in queries]


def _plain(value: Any) -> Any:
    """YAML data -> JSON-ready data (plain dicts, no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):  # YAML dates and timestamps
        return value.isoformat()
    return value


def _pool(r: _Reader, e: _Map, where: str) -> dict[str, int]:
    if e.get("pool") is None:
        return {}
    pool = r.mapping(e, "pool", f"{where}.pool")
    r.known(pool, POOL_KEYS, f"{where}.pool")
    for key, value in pool.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise r.fail(pool, key, f"{where}.pool.{key}", f"must be a non-negative integer, got {value!r}")
    for key in ("ceil", "max_batch"):
        if pool.get(key) == 0:
            raise r.fail(pool, key, f"{where}.pool.{key}", "must be at least 1")
    # As the node does: defaults bend to the bounds given ({ceil: 1} means cruise 1); only
    # explicit values are held to floor <= cruise <= ceil.
    s = dict(pool)
    if "ceil" not in s and "floor" in s:
        s["ceil"] = max(POOL_DEFAULTS["ceil"], s["floor"])
    s.setdefault("floor", POOL_DEFAULTS["floor"])
    s.setdefault("ceil", POOL_DEFAULTS["ceil"])
    s.setdefault("cruise", min(max(POOL_DEFAULTS["cruise"], s["floor"]), s["ceil"]))
    if not s["floor"] <= s["cruise"] <= s["ceil"]:
        key = next((k for k in ("floor", "cruise", "ceil") if k in pool), "floor")
        raise r.fail(
            pool,
            key,
            f"{where}.pool",
            f"need floor <= cruise <= ceil, got floor={s['floor']} cruise={s['cruise']} ceil={s['ceil']}",
        )
    return dict(pool)
