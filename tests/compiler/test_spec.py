"""service.yaml validation: every mistake is one line naming the key, and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler.errors import CompileError
from compiler.spec import PredictionEndpoint, read_service

GOOD = """\
service: fraud
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  score:
    type: prediction
    model: model.joblib
    features:
      amount: float
      merchant_category: string
      seen: {type: bool, nullable: true}
    sample: data/sample.csv
    test_queries:
      - features: {amount: 1.5, merchant_category: grocery, seen: true}
    pool: {floor: 1, ceil: 8, cruise: 2, queue: 16, timeout: 10000}
    parity_tolerance: 0.001
  explain:
    type: function
    file: code/rules.py
    function: explain
"""


def folder_with(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "svc"
    for name in ("model.joblib", "data/customers.csv", "data/sample.csv", "code/rules.py"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    (folder / "service.yaml").write_text(textwrap.dedent(text))
    return folder


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CompileError) as info:
        read_service(folder_with(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_service(tmp_path: Path) -> None:
    spec = read_service(folder_with(tmp_path, GOOD))
    assert (spec.service, spec.version) == ("fraud", "v1")
    assert spec.datasets["customers"].name == "customers.csv"
    score = spec.endpoints["score"]
    assert isinstance(score, PredictionEndpoint)
    assert [(f.name, f.type, f.nullable) for f in score.features or ()] == [
        ("amount", "float", None),
        ("merchant_category", "string", None),
        ("seen", "bool", True),
    ]
    assert score.pool == {"floor": 1, "ceil": 8, "cruise": 2, "queue": 16, "timeout": 10000}
    assert score.parity_tolerance == 0.001
    assert score.test_queries == [{"features": {"amount": 1.5, "merchant_category": "grocery", "seen": True}}]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "version: v1",
            "version: v1\nowner: me",
            "line 3: top level: unknown key 'owner' (known keys: service, version, datasets, endpoints, api_keys, query_log)",
        ),
        (
            "    model: model.joblib",
            "    modle: model.joblib",
            "line 8: endpoints.score: unknown key 'modle': did you mean 'model'? (known keys: type, model, features",
        ),
        ("queue: 16", "qeue: 16", "endpoints.score.pool: unknown key 'qeue': did you mean 'queue'? (known keys: floor"),
        (
            "{type: bool, nullable: true}",
            "{type: bool, nulable: true}",
            "line 12: endpoints.score.features.seen: unknown key 'nulable': did you mean 'nullable'?",
        ),
        (  # no type at all: the unknown key is the mistake to name, with its own line
            "    type: prediction",
            "    typ: prediction",
            "line 7: endpoints.score: unknown key 'typ': did you mean 'type'? (an endpoint needs 'type:', one of",
        ),
        (
            "amount: float",
            "amount: double",
            "endpoints.score.features.amount: type must be one of float, int, string, bool, got 'double'",
        ),
        (
            "type: prediction",
            "type: predict",
            "line 7: endpoints.score.type: must be one of prediction, function, lookup, custom-prediction, sql, "
            "got 'predict': did you mean 'prediction'?",
        ),
        (
            "service: fraud",
            "service: fraud detection",
            "line 1: service: must match [A-Za-z0-9_-]+, got 'fraud detection'",
        ),
        ("service: fraud", 'service: "fraud\\n"', "line 1: service: must match [A-Za-z0-9_-]+, got 'fraud\\n'"),
        (
            "floor: 1, ceil: 8, cruise: 2",
            "floor: 3, ceil: 8, cruise: 2",
            "need floor <= cruise <= ceil, got floor=3 cruise=2 ceil=8",
        ),
        ("ceil: 8, cruise: 2", "ceil: 1, cruise: 2", "need floor <= cruise <= ceil, got floor=1 cruise=2 ceil=1"),
        ("timeout: 10000", "timeout: -5", "endpoints.score.pool.timeout: must be a non-negative integer, got -5"),
        ("parity_tolerance: 0.001", "parity_tolerance: 2", "endpoints.score.parity_tolerance: must be in (0, 1)"),
        ("model: model.joblib", "model: models/missing.joblib", "line 8: endpoints.score.model: file not found: "),
        (
            "customers: data/customers.csv",
            "customers: model.joblib",
            "datasets.customers: a dataset must be a .csv or .parquet file",
        ),
        (
            "      - features: {amount: 1.5, merchant_category: grocery, seen: true}",
            "      - {amount: 1.5}",
            "endpoints.score.test_queries[0]: a prediction query is {features: {...}}",
        ),
        (
            "    sample: data/sample.csv",
            "    sample: data/sample.csv\n    sample: data/other.csv",
            "line 14: duplicate key 'sample'",
        ),
        (
            "    function: explain",
            "    function: 'explain()'",
            "endpoints.explain.function: not a function name: 'explain()'",
        ),
    ],
)
def test_mistakes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    message = error(tmp_path, GOOD.replace(old, new, 1))
    assert expected in message
    assert message.startswith(str(tmp_path / "svc" / "service.yaml"))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, GOOD.replace("    type: prediction", "    type: [prediction"))
    assert "line 8" in message and "YAML syntax error" in message


@pytest.mark.parametrize(
    ("pool", "ok"),
    [("{ceil: 1}", True), ("{floor: 12}", True), ("{floor: 0, ceil: 1}", True), ("{floor: 3, ceil: 2}", False)],
)
def test_pool_defaults_bend_like_the_node(tmp_path: Path, pool: str, ok: bool) -> None:
    text = GOOD.replace("{floor: 1, ceil: 8, cruise: 2, queue: 16, timeout: 10000}", pool)
    if ok:
        read_service(folder_with(tmp_path, text))
    else:
        assert "need floor <= cruise <= ceil" in error(tmp_path, text)


def test_missing_required_keys(tmp_path: Path) -> None:
    assert "the key 'version' is required" in error(tmp_path, "service: s\nendpoints: {}\n")
    assert "at least one endpoint" in error(tmp_path, "service: s\nversion: v1\nendpoints: {}\n")
    assert "needs 'model: <file>'" in error(tmp_path, "service: s\nversion: v1\nendpoints:\n  e: {type: prediction}\n")


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="no such service folder"):
        read_service(tmp_path / "nope")
    with pytest.raises(CompileError, match=r"no service\.yaml in"):
        read_service(tmp_path)


def test_explanation_settings(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    parity_tolerance: 0.001\n",
        "    parity_tolerance: 0.001\n    explanations: {method: ICE, n_explanations: 2, max_mc_steps: 500}\n"
        "    positive_class: FRAUD\n",
    )
    score = read_service(folder_with(tmp_path, text)).endpoints["score"]
    assert isinstance(score, PredictionEndpoint)
    assert score.explanations == {"method": "ICE", "n_explanations": 2, "max_mc_steps": 500}
    assert score.positive_class == "FRAUD"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("{method: LIME}", "endpoints.score.explanations.method: must be one of SHAPLEY, ICE"),
        ("{enabled: 1}", "endpoints.score.explanations.enabled: must be true or false, got 1"),
        ("{n_explanations: 0}", "endpoints.score.explanations.n_explanations: must be an integer from 1"),
        ("{mc_steps: 2000}", "endpoints.score.explanations.mc_steps: 2000 is above max_mc_steps (1000)"),
        ("{steps: 3}", "unknown key 'steps'"),
        ("yes", "endpoints.score.explanations: expected a mapping"),
    ],
)
def test_bad_explanation_settings(tmp_path: Path, settings: str, expected: str) -> None:
    text = GOOD.replace("    parity_tolerance: 0.001\n", f"    parity_tolerance: 0.001\n    explanations: {settings}\n")
    assert expected in error(tmp_path, text)
