"""The real command line in a subprocess: success, and one clear line + exit 2 per mistake."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.compiler.helpers import Package, run_compiler, write_service


def frame(n: int = 160, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"amount": rng.normal(50, 20, n), "category": rng.choice(["a", "b", "c"], n).astype(object)})
    y = np.where(df["amount"] + 15 * (df["category"] == "a") > 55, "HIGH", "LOW")
    return df, y


def pipeline(final: Any) -> Pipeline:
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["amount"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["category"])]
    )
    return Pipeline([("pre", pre), ("model", final)])


def service(tmp_path: Path, final: Any = None, **kwargs: Any) -> Path:
    df, y = frame()
    model = pipeline(final if final is not None else LogisticRegression()).fit(df, y)
    return write_service(tmp_path / "svc", model, sample=df.head(60), **kwargs)


def test_compile_writes_default_package_in_cwd(tmp_path: Path) -> None:
    service(tmp_path)
    run = run_compiler("svc", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    pkg = Package(tmp_path / "svc-v1.apz")
    assert pkg.manifest["service"] == "svc" and pkg.endpoint()["parity"]["rows"] == 60
    for step in ("reading", "converting score", "parity check score", "packing", "wrote"):
        assert step in run.stdout
    assert "parity: ONNX vs scikit-learn" in run.stdout


def test_apinode_compile(tmp_path: Path) -> None:
    assert run_compiler("--help", apinode=True).returncode == 0
    folder = service(tmp_path)
    run = run_compiler(folder, "-o", tmp_path / "out" / "pkg.apz", apinode=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "pkg.apz").is_file()


def test_a_mistyped_type_key_is_named_with_its_line(tmp_path: Path) -> None:
    """`typ: prediction` used to answer "type ... got nothing", never naming `typ`."""
    folder = service(tmp_path)
    text = (folder / "service.yaml").read_text()
    assert "    type: prediction\n" in text
    (folder / "service.yaml").write_text(text.replace("    type: prediction\n", "    typ: prediction\n"))
    line = text.splitlines().index("    type: prediction") + 1
    run = run_compiler(folder, "-o", tmp_path / "out.apz", apinode=True)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        f"apinode compile: error: {folder / 'service.yaml'}: line {line}: endpoints.score: unknown key 'typ': "
        "did you mean 'type'? (an endpoint needs 'type:', one of prediction, function, lookup, custom-prediction, sql)"
    ]
    assert not (tmp_path / "out.apz").exists()


def _missing_model(tmp_path: Path) -> Path:
    folder = service(tmp_path)
    (folder / "model.joblib").unlink()
    return folder


def _yaml_error(tmp_path: Path) -> Path:
    folder = service(tmp_path)
    (folder / "service.yaml").write_text("service: svc\nversion: v1\nendpoints:\n  score: {type: [\n")
    return folder


def _unknown_key(tmp_path: Path) -> Path:
    return service(tmp_path, extra={"smaple": "sample.csv"})


def _wrong_features(tmp_path: Path) -> Path:
    return service(tmp_path, features={"amount": "float", "categry": "string"})


def _wrong_type(tmp_path: Path) -> Path:
    return service(tmp_path, features={"amount": "string", "category": "string"})


def _nan_forest(tmp_path: Path) -> Path:
    """A real parity failure: skl2onnx drops the NaN routing RandomForest learns."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400), "y": rng.normal(size=400)})
    df.loc[rng.random(400) < 0.3, "x"] = np.nan
    # NaN rows belong with the low-x class: the forest learns to send NaN left, ONNX sends it right
    label = np.where(df["x"].isna() | (df["x"] + df["y"] < 0), "A", "B")
    pre = ColumnTransformer([("s", StandardScaler(), ["x", "y"])])
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    model = Pipeline([("pre", pre), ("rf", forest)]).fit(df, label)
    features = {"x": {"type": "float", "nullable": True}, "y": "float"}
    return write_service(tmp_path / "svc", model, features=features, sample=df)


def _tight_tolerance(tmp_path: Path) -> Path:
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0)
    return service(tmp_path, forest, extra={"parity_tolerance": 1e-12})


CASES: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "missing folder": (lambda t: t / "nope", ["no such service folder: ", "nope"]),
    "missing model": (_missing_model, ["endpoints.score.model: file not found: ", "model.joblib"]),
    "yaml syntax": (_yaml_error, ["service.yaml: line 5, column 1: YAML syntax error"]),
    "unknown key": (
        _unknown_key,
        ["endpoints.score: unknown key 'smaple': did you mean 'sample'? (known keys: type, model"],
    ),
    "unsupported": (
        lambda t: service(t, NearestCentroid()),
        ["unsupported estimator NearestCentroid", "supported: Pipeline, ColumnTransformer"],
    ),
    "unknown feature": (
        _wrong_features,
        ["features: the model has no feature 'categry' (it was fitted on: amount, category)"],
    ),
    "feature type": (_wrong_type, ["features.amount: declared string, but the model reads a number (StandardScaler)"]),
    "parity": (
        _nan_forest,
        [
            "endpoints.score: parity check failed",
            "sample.csv row ",
            "x=null",
            "scikit-learn predicts 'A'",
            "ONNX predicts",
        ],
    ),
    "tolerance": (_tight_tolerance, ["parity check failed", "> 1e-12"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    folder = make(tmp_path)
    run = run_compiler(folder, "-o", tmp_path / "out.apz")
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("apinode compile: error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "out.apz").exists()
    shutil.rmtree(tmp_path / "svc", ignore_errors=True)
