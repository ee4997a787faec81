"""One prediction endpoint: model file -> ONNX graph + manifest entry, parity checked.

The steps: load the estimator, analyze it (supported? task, classes, input mode, nullable
columns), settle the feature list with service.yaml, turn the sample (or the test queries)
into the rows the node would build, then convert in double precision and check parity,
falling back to float when double cannot be converted or does not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.console import Reporter
from compiler.errors import CompileError
from compiler.explain import proba_percentiles, settings_entry
from compiler.inputs import load_model, read_table
from compiler.onnx_convert import ConversionFailed, Converted, convert, precisions
from compiler.parity import ParityResult, check
from compiler.rows import BadValue, NullValue, to_row
from compiler.schema import Feature, ModelInfo, analyze, resolve_features
from compiler.spec import PredictionEndpoint

MAX_PARITY_ROWS = 5000
GENERATED_QUERIES = 3


@dataclass(frozen=True, slots=True)
class PredictionBuild:
    entry: dict[str, Any]  # the manifest entry, without test_queries and pool
    onnx: bytes
    parity: ParityResult
    test_queries: list[dict[str, Any]] | None
    booster: bool
    files: dict[str, bytes]  # more package files: the explanation background


@dataclass(slots=True)
class _Rows:
    rows: list[list[Any]]
    labels: list[str]
    source: str
    skipped: int = 0


def build_prediction(ep: PredictionEndpoint, folder: Path, rep: Reporter) -> PredictionBuild:
    where = f"endpoints.{ep.id}"
    rep.step(f"loading {ep.id} model {_rel(ep.model, folder)}")
    model, shown = load_model(ep.model, f"{where}.model")
    for text in shown:
        rep.warn(text)
    info = analyze(model, f"{where}.model ({_rel(ep.model, folder)})")
    declared_strings = tuple(d.name for d in ep.features or () if d.type == "string")
    model_strings = tuple(c for c, k in info.kinds.items() if k == "string")
    sample = None
    if ep.sample is not None:
        sample = read_table(ep.sample, f"{where}.sample", declared_strings or model_strings)
    features, shown = resolve_features(info, ep.features, sample, where)
    for text in shown:
        rep.warn(text)
    # Enriched endpoints' test queries lack the looked-up features: the node plays them
    # (with enrichment) when the package is pushed; parity is checked on the sample.
    queries = _query_rows(ep, features, where) if not ep.enrich else _Rows([], [], "test_queries")
    data = _sample_rows(ep, features, sample, folder, where) if sample is not None else queries
    if data.skipped:
        rep.warn(
            f"{where}.sample: skipped {data.skipped} rows with nulls in features the model "
            "cannot impute (the node refuses those)"
        )
    if not data.rows:
        rep.warn(
            f"{where}: parity NOT checked (no sample rows and no test_queries): add "
            "'sample: <csv>' so the ONNX model is compared with the original"
        )
    test_queries = ep.test_queries
    if test_queries is None and sample is not None and data.rows and not ep.enrich:
        test_queries = [
            {"features": {f.name: v for f, v in zip(features, row, strict=True)}}
            for row in data.rows[:GENERATED_QUERIES]
        ]
    rep.step(f"converting {ep.id}: {info.description} ({len(features)} features, {info.input_mode} input, {info.task})")
    conv, parity = _convert_checked(ep, info, features, data, rep, where)
    entry = _entry(ep, info, features, conv, parity)
    sample_rows = data.rows if sample is not None else []
    entry["explanations"], files = settings_entry(ep.id, ep.explanations, sample_rows, features)
    if files:
        n = min(ep.explanations.get("background_rows", 100), len(sample_rows))
        rep.step(f"explanations {ep.id}: a background of {n} sample rows")
    else:
        rep.note(f"{ep.id}: no sample, so no explanations and no probaPercentile (add 'sample: <csv>')")
    if ep.positive_class is not None:
        entry["positive_class"] = _positive_class(ep, info, where)
    if info.task == "binary":
        column = info.classes.index(entry.get("positive_class", info.classes[1])) if info.classes else 1
        percentiles = proba_percentiles(conv, features, sample_rows, column)
        if percentiles is not None:
            entry["proba_percentiles"] = percentiles
    return PredictionBuild(
        entry=entry,
        onnx=conv.onnx,
        parity=parity,
        test_queries=test_queries,
        booster=info.booster,
        files=files,
    )


def _positive_class(ep: PredictionEndpoint, info: ModelInfo, where: str) -> Any:
    """`positive_class:` as one of the model's labels (a YAML `1` names the label 1 or "1")."""
    if info.task != "binary" or not info.classes:
        raise CompileError(f"{where}.positive_class: only a binary classifier has one (this model: {info.task})")
    for c in info.classes:
        if c == ep.positive_class or str(c) == str(ep.positive_class):
            return c
    raise CompileError(
        f"{where}.positive_class: {ep.positive_class!r} is not one of the model's classes {info.classes}"
    )


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _query_rows(ep: PredictionEndpoint, features: list[Feature], where: str) -> _Rows:
    out = _Rows([], [], "test_queries")
    for i, query in enumerate(ep.test_queries or []):
        try:
            out.rows.append(to_row(features, query["features"]))
        except BadValue as exc:
            raise CompileError(f"{where}.test_queries[{i}]: {exc}") from None
        out.labels.append(f"test query {i}")
    return out


def _sample_rows(ep: PredictionEndpoint, features: list[Feature], sample: Any, folder: Path, where: str) -> _Rows:
    assert ep.sample is not None
    name = _rel(ep.sample, folder)
    missing = [f.name for f in features if f.name not in sample.columns]
    if missing:
        raise CompileError(f"{where}.sample: {name} lacks the feature column(s) {', '.join(map(repr, missing))}")
    out = _Rows([], [], "sample")
    records = sample[[f.name for f in features]].head(MAX_PARITY_ROWS).to_dict("records")
    for i, values in enumerate(records):
        try:
            out.rows.append(to_row(features, values))
        except NullValue:
            out.skipped += 1
            continue
        except BadValue as exc:
            raise CompileError(f"{where}.sample: {name} row {i}: {exc}") from None
        out.labels.append(f"{name} row {i}")
    return out


def _convert_checked(
    ep: PredictionEndpoint,
    info: ModelInfo,
    features: list[Feature],
    data: _Rows,
    rep: Reporter,
    where: str,
) -> tuple[Converted, ParityResult]:
    refused: list[str] = []
    failed: list[ParityResult] = []
    for precision in precisions(info):
        try:
            conv = convert(info, features, precision)
        except ConversionFailed as exc:
            refused.append(f"{precision} inputs: {exc}")
            continue
        if data.rows:
            rep.step(f"parity check {ep.id}: {len(data.rows)} rows from {data.source}, {precision} inputs")
        result = check(
            ep.id,
            info,
            features,
            conv,
            data.rows,
            data.labels,
            data.source if data.rows else "none",
            data.skipped,
            ep.parity_tolerance,
        )
        if result.passed:
            for earlier in refused:
                rep.note(f"{ep.id}: {earlier}")
            for bad in failed:
                rep.note(f"{ep.id}: {bad.precision} inputs failed the parity check: {bad.failure}")
            return conv, result
        failed.append(result)
    if failed:
        worst = failed[0]
        raise CompileError(f"{where}: parity check failed ({worst.precision} inputs): {worst.failure}")
    raise CompileError(f"{where}: cannot convert {info.description} to ONNX: {'; '.join(refused)}")


def _entry(
    ep: PredictionEndpoint,
    info: ModelInfo,
    features: list[Feature],
    conv: Converted,
    parity: ParityResult,
) -> dict[str, Any]:
    return {
        "type": "prediction",
        "task": info.task,
        "features": [
            {
                "name": f.name,
                "type": f.type,
                "onnx_type": "string" if f.type == "string" else conv.precision,
                "nullable": f.nullable,
            }
            for f in features
        ],
        "classes": info.classes,
        "model": {
            "path": f"models/{ep.id}.onnx",
            "input_mode": conv.input_mode,
            "input_name": conv.input_name,
            # null: the node takes the first maximum of the probabilities, as scikit-learn does
            "label_output": conv.label_output if conv.label_class else None,
            "proba_output": conv.proba_output,
            "value_output": conv.value_output,
        },
        "estimator": info.description,
        "parity": parity.manifest(),
    }
