"""One endpoint's manifest entry -> :class:`~apz.specs.EndpointSpec`, by kind.

Called by :func:`apz.manifest.parse_manifest` with the package's files and datasets (an
entry may only name files the package lists and datasets it bundles). Every field is
checked and converted here; a wrong one is a :class:`~apz.vocab.PackageError` naming it
(`manifest.json: endpoints.score.model.path ...`).
"""

from __future__ import annotations

import itertools
from pathlib import PurePosixPath
from typing import Any

from apz.specs import (
    CodeSpec,
    DatasetSpec,
    EndpointSpec,
    EnrichmentSpec,
    ExplanationSpec,
    FeatureSpec,
    FileEntry,
    LookupSpec,
    ModelSpec,
    SqlSpec,
)
from apz.sqlparams import SqlTextError
from apz.sqlparams import parse as parse_sql
from apz.vocab import (
    ENDPOINT_TYPES,
    ENRICH_POLICIES,
    EXPLANATION_METHODS,
    FEATURE_TYPES,
    ID_RE,
    INPUT_MODES,
    LOOKUP_POLICIES,
    ONNX_TYPES,
    TABLE_RE,
    TASKS,
    PackageError,
    refuse,
    require,
    safe_member,
)


def parse_endpoint(eid: str, e: Any, files: dict[str, FileEntry], datasets: dict[str, DatasetSpec]) -> EndpointSpec:
    where = f"endpoints.{eid}"
    require(bool(ID_RE.fullmatch(eid)), f"bad endpoint id {eid!r}")
    require(isinstance(e, dict), f"{where} must be an object")
    etype = e.get("type")
    require(etype in ENDPOINT_TYPES, f"{where}.type {etype!r} is not one of {ENDPOINT_TYPES}")
    tq = e.get("test_queries")
    require(
        tq is None or (isinstance(tq, str) and tq in files), f"{where}.test_queries {tq!r} is not a file of the package"
    )
    pool = e.get("pool") or {}
    require(isinstance(pool, dict), f"{where}.pool must be an object")
    common: dict[str, Any] = {"id": eid, "type": etype, "test_queries": tq, "pool": pool}
    if etype == "sql":
        return EndpointSpec(**common, sql=_sql(where, e, files))
    if etype == "lookup":
        return EndpointSpec(**common, lookup=_lookup(where, e, datasets))
    if etype == "function":
        code, folders = _code(where, e, files)
        return EndpointSpec(**common, code=code, folders=folders)
    enrich = _enrich(where, e, datasets)
    if etype == "custom-prediction":
        code, folders = _code(where, e, files)
        return _custom_prediction(where, e, common, enrich, code, folders)
    return _prediction(where, e, common, enrich, files)


def _prediction(
    where: str, e: dict[str, Any], common: dict[str, Any], enrich: tuple[EnrichmentSpec, ...], files: dict[str, Any]
) -> EndpointSpec:
    task: Any = e.get("task")
    require(task in TASKS, f"{where}.task {task!r} is not one of {TASKS}")
    feats = []
    feature_list = e.get("features") or []
    require(isinstance(feature_list, list), f"{where}.features must be a list")
    for i, f in enumerate(feature_list):
        require(isinstance(f, dict), f"{where}.features[{i}] must be an object")
        require(f.get("type") in FEATURE_TYPES, f"{where}.features[{i}].type {f.get('type')!r}")
        require(f.get("onnx_type") in ONNX_TYPES, f"{where}.features[{i}].onnx_type {f.get('onnx_type')!r}")
        require(isinstance(f.get("name"), str), f"{where}.features[{i}].name")
        feats.append(FeatureSpec(f["name"], f["type"], f["onnx_type"], bool(f.get("nullable", False))))
    require(len(feats) > 0, f"{where}.features is empty")
    classes: Any = e.get("classes")
    if task == "regression":
        require(classes is None, f"{where}: a regression has no classes")
    else:
        require(isinstance(classes, list) and len(classes) >= 2, f"{where}.classes needs >= 2 labels")
        require(
            all(isinstance(c, str | int | float) for c in classes) and len(set(classes)) == len(classes),
            f"{where}.classes must be distinct strings, numbers or booleans",
        )
    return EndpointSpec(
        **common,
        task=task,
        features=tuple(feats),
        classes=tuple(classes) if classes is not None else None,
        model=_model(where, e.get("model"), task, files),
        explanations=_explanations(e.get("explanations"), where, files),
        proba_percentiles=_percentiles(e.get("proba_percentiles"), where, task),
        positive=_positive(e, where, task, classes),
        enrich=enrich,
    )


def _model(where: str, m: Any, task: str, files: dict[str, Any]) -> ModelSpec:
    require(isinstance(m, dict), f"{where}.model must be an object")
    path = m.get("path")
    require(isinstance(path, str) and path in files, f"{where}.model.path {path!r} is not a file of the package")
    require(m.get("input_mode") in INPUT_MODES, f"{where}.model.input_mode")
    for key in ("input_name", "label_output", "proba_output", "value_output"):
        require(m.get(key) is None or isinstance(m.get(key), str), f"{where}.model.{key} must be a string")
    model = ModelSpec(
        path=path,
        input_mode=m["input_mode"],
        input_name=m.get("input_name") or "input",
        label_output=m.get("label_output"),
        proba_output=m.get("proba_output"),
        value_output=m.get("value_output"),
    )
    if task == "regression":
        require(model.value_output is not None, f"{where}.model.value_output is required for a regression")
    else:
        require(model.proba_output is not None, f"{where}.model.proba_output is required for a classifier")
    return model


def _positive(e: dict[str, Any], where: str, task: str, classes: Any) -> int:
    if "positive_class" not in e:
        return 1
    require(task == "binary", f"{where}.positive_class: only a binary classifier has one")
    require(e["positive_class"] in classes, f"{where}.positive_class {e['positive_class']!r} is not one of classes")
    return int(classes.index(e["positive_class"]))


_EXPLANATION_KEYS = {"enabled": bool, "by_default": bool, "method": str, "n_explanations": int}
_EXPLANATION_KEYS.update(mc_steps=int, max_mc_steps=int, background=str)


def _explanations(x: Any, where: str, files: dict[str, Any]) -> ExplanationSpec | None:
    """`explanations`: the endpoint's settings; `background` names the package file of
    sample rows the worker explains against (absent: compiled without a sample)."""
    if x is None:
        return None
    require(isinstance(x, dict), f"{where}.explanations must be an object")
    for key, kind in _EXPLANATION_KEYS.items():
        v = x.get(key)
        if key == "background":
            require(v is None or v in files, f"{where}.explanations.background {v!r} is not a file of the package")
        elif kind is int:
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{where}.explanations.{key}")
        else:
            require(isinstance(v, kind), f"{where}.explanations.{key} must be a {kind.__name__}")
    require(x["method"] in EXPLANATION_METHODS, f"{where}.explanations.method {x['method']!r}")
    return ExplanationSpec(
        enabled=x["enabled"],
        by_default=x["by_default"],
        method=x["method"],
        n_explanations=x["n_explanations"],
        mc_steps=x["mc_steps"],
        max_mc_steps=x["max_mc_steps"],
        background=x.get("background"),
    )


def _percentiles(p: Any, where: str, task: str) -> tuple[float, ...] | None:
    if p is None:
        return None
    require(task == "binary", f"{where}.proba_percentiles: only a binary classifier has them")
    require(
        isinstance(p, list) and len(p) > 0 and all(isinstance(v, int | float) for v in p),
        f"{where}.proba_percentiles must be a non-empty list of numbers",
    )
    require(all(a <= b for a, b in itertools.pairwise(p)), f"{where}.proba_percentiles must be sorted")
    return tuple(float(v) for v in p)


def _custom_prediction(
    where: str,
    e: dict[str, Any],
    common: dict[str, Any],
    enrich: tuple[EnrichmentSpec, ...],
    code: CodeSpec,
    folders: tuple[str, ...],
) -> EndpointSpec:
    """A class in the service's code; declared features (optional) are validated like a
    model's, and reach `predict(df)` as its columns."""
    task = e.get("task")
    require(task is None or task in TASKS, f"{where}.task {task!r} is not one of {TASKS}")
    feats = []
    feature_list = e.get("features") or []
    require(isinstance(feature_list, list), f"{where}.features must be a list")
    for i, f in enumerate(feature_list):
        require(
            isinstance(f, dict) and isinstance(f.get("name"), str) and f.get("type") in FEATURE_TYPES,
            f"{where}.features[{i}] must be {{name, type in {FEATURE_TYPES}}}",
        )
        # no ONNX input behind it: nulls stay None for the user's DataFrame
        feats.append(FeatureSpec(f["name"], f["type"], "none", bool(f.get("nullable", True))))
    classes = e.get("classes")
    require(
        classes is None or (isinstance(classes, list) and all(isinstance(c, str | int | float) for c in classes)),
        f"{where}.classes must be a list of labels",
    )
    return EndpointSpec(
        **common,
        task=task,
        features=tuple(feats),
        classes=tuple(classes) if classes is not None else None,
        enrich=enrich,
        code=code,
        folders=folders,
    )


def _code(where: str, e: dict[str, Any], files: dict[str, Any]) -> tuple[CodeSpec, tuple[str, ...]]:
    """The code of a function endpoint is a listed .py file under its root, and its folders
    are inside the package: a worker imports and reads exactly these paths."""
    code = e.get("code")
    if not isinstance(code, dict):
        refuse(f"{where}.code must be an object")
    path, root = code.get("path"), code.get("root", "code")
    attr = "class" if e.get("type") == "custom-prediction" else "function"
    function: Any = code.get(attr)
    if not (isinstance(path, str) and path in files and path.endswith(".py")):
        refuse(f"{where}.code.path {path!r} is not a .py file of the package")
    try:
        root = safe_member(root)
    except PackageError as exc:
        raise PackageError(f"manifest.json: {where}.code.root: {exc}") from None
    require(
        PurePosixPath(root) in PurePosixPath(path).parents,
        f"{where}.code.path {path!r} is not under its root {root!r}",
    )
    require(
        isinstance(function, str) and function.isidentifier(),
        f"{where}.code.{attr} {function!r} is not a Python name",
    )
    folders = e.get("folders", [])
    require(isinstance(folders, list), f"{where}.folders must be a list of package paths")
    for f in folders:
        try:
            safe_member(f)
        except PackageError as exc:
            raise PackageError(f"manifest.json: {where}.folders: {exc}") from None
    return CodeSpec(path=path, root=root, name=function), tuple(folders)


def _sql(where: str, e: dict[str, Any], files: dict[str, Any]) -> SqlSpec:
    statements: list[Any] = e.get("statements") or []
    require(
        isinstance(statements, list) and bool(statements) and all(isinstance(s, str) and s.strip() for s in statements),
        f"{where}.statements must be a non-empty list of SQL statements",
    )
    parsed = []
    for i, sql in enumerate(statements):
        try:
            parsed.append(parse_sql(sql))
        except SqlTextError as exc:
            raise PackageError(f"manifest.json: {where}.statements[{i}]: {exc}") from None
    database, connection = e.get("database"), e.get("connection")
    require((database is None) != (connection is None), f"{where} needs one of 'database' and 'connection'")
    if database is not None:
        require(
            isinstance(database, str) and database in files,
            f"{where}.database {database!r} is not a file of the package",
        )
    else:
        require(
            isinstance(connection, str) and bool(ID_RE.fullmatch(connection)),
            f"{where}.connection {connection!r} is not a connection name ([A-Za-z0-9_-]+)",
        )
    return SqlSpec(statements=tuple(parsed), database=database, connection=connection)


def _lookup(where: str, e: dict[str, Any], datasets: dict[str, DatasetSpec]) -> LookupSpec:
    ds = e.get("dataset")
    if not (isinstance(ds, str) and ds in datasets):
        refuse(f"{where}.dataset {ds!r} is not a dataset of the package")
    columns = datasets[ds].columns
    keys, cols = e.get("keys"), e.get("columns")
    if not (isinstance(keys, list) and bool(keys) and all(isinstance(k, str) for k in keys)):
        refuse(f"{where}.keys must be a non-empty list of column names")
    require(cols is None or (isinstance(cols, list) and all(isinstance(c, str) for c in cols)), f"{where}.columns")
    for c in [*keys, *(cols or ())]:
        require(columns is None or c in columns, f"{where}: dataset {ds!r} has no column {c!r}")
    for policy, allowed in LOOKUP_POLICIES.items():
        require(e.get(policy, allowed[0]) in allowed, f"{where}.{policy} must be one of {allowed}")
    return LookupSpec(
        dataset=ds,
        keys=tuple(keys),
        columns=tuple(cols) if cols is not None else None,
        on_no_match=e.get("on_no_match", LOOKUP_POLICIES["on_no_match"][0]),
        on_multiple=e.get("on_multiple", LOOKUP_POLICIES["on_multiple"][0]),
    )


def _enrich(where: str, e: dict[str, Any], datasets: dict[str, DatasetSpec]) -> tuple[EnrichmentSpec, ...]:
    entries = e.get("enrich")
    if entries is None:
        return ()
    require(isinstance(entries, list), f"{where}.enrich must be a list")
    return tuple(_enrichment(f"{where}.enrich[{i}]", x, datasets) for i, x in enumerate(entries))


def _enrichment(w: str, x: Any, datasets: dict[str, DatasetSpec]) -> EnrichmentSpec:
    require(isinstance(x, dict), f"{w} must be an object")
    ds = x.get("dataset")
    table = connection = None
    if "table" in x:  # a table of a database the node connects to: its columns are unknown here
        require(ds is None, f"{w} names both a dataset and a table")
        table, connection = x.get("table"), x.get("connection")
        require(
            isinstance(table, str) and bool(TABLE_RE.fullmatch(table)),
            f"{w}.table {table!r} is not a table name ([schema.]name, letters, digits and '_')",
        )
        require(
            isinstance(connection, str) and bool(ID_RE.fullmatch(connection)),
            f"{w}.connection {connection!r} is not a name",
        )
        columns = None
    elif not (isinstance(ds, str) and ds in datasets):
        refuse(f"{w}.dataset {ds!r} is not a dataset of the package")
    else:
        columns = datasets[ds].columns
    maps = {}
    for part in ("keys", "columns"):
        m = x.get(part)
        require(
            isinstance(m, dict) and bool(m) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()),
            f"{w}.{part} must be a non-empty object of dataset column -> feature name",
        )
        for c in m:
            require(columns is None or c in columns, f"{w}.{part}: dataset {ds!r} has no column {c!r}")
        maps[part] = dict(m)
    for policy, allowed in ENRICH_POLICIES.items():
        require(x.get(policy, allowed[0]) in allowed, f"{w}.{policy} must be one of {allowed}")
    require(isinstance(x.get("override", False), bool), f"{w}.override must be true or false")
    return EnrichmentSpec(
        keys=maps["keys"],
        columns=maps["columns"],
        dataset=ds if table is None else None,
        table=table,
        connection=connection,
        on_missing_key=x.get("on_missing_key", ENRICH_POLICIES["on_missing_key"][0]),
        on_no_match=x.get("on_no_match", ENRICH_POLICIES["on_no_match"][0]),
        on_multiple=x.get("on_multiple", ENRICH_POLICIES["on_multiple"][0]),
        override=x.get("override", False),
    )
