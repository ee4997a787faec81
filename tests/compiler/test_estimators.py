"""Every supported estimator, in a Pipeline with a ColumnTransformer, compiled and re-run.

Each case fits on small synthetic data (numbers with NaN, an int, a bool, strings with
nulls and, in the held-out rows, an unseen category), compiles with `compile_service`,
then runs the packaged ONNX model with onnxruntime, fed as the node feeds it, on 250
held-out rows: the classes must be identical and the probabilities within 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from compiler import compile_service
from tests.compiler.helpers import Package, write_service

N_TRAIN, N_HELD = 500, 250

CLASSIFIERS: dict[str, Callable[[], Any]] = {
    "LogisticRegression": lambda: LogisticRegression(max_iter=1000),
    "DecisionTreeClassifier": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "RandomForestClassifier": lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0),
    "ExtraTreesClassifier": lambda: ExtraTreesClassifier(n_estimators=8, max_depth=6, random_state=0),
    "GradientBoostingClassifier": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0),
    "HistGradientBoostingClassifier": lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
}
REGRESSORS: dict[str, Callable[[], Any]] = {
    "LinearRegression": LinearRegression,
    "Ridge": lambda: Ridge(alpha=0.5),
    "DecisionTreeRegressor": lambda: DecisionTreeRegressor(max_depth=6, random_state=0),
    "RandomForestRegressor": lambda: RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0),
    "ExtraTreesRegressor": lambda: ExtraTreesRegressor(n_estimators=8, max_depth=6, random_state=0),
    "GradientBoostingRegressor": lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0),
    "HistGradientBoostingRegressor": lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0),
}
CASES = [(n, t) for n in CLASSIFIERS for t in ("binary", "multiclass")] + [(n, "regression") for n in REGRESSORS]


def make_data(task: str, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_HELD
    df = pd.DataFrame(
        {
            "a": rng.normal(0.0, 2.0, n),
            "b": rng.uniform(0.0, 100.0, n),
            "c": rng.integers(0, 24, n),
            "cat": rng.choice(["x", "y", "z", "w"], n).astype(object),
            "flag": rng.random(n) < 0.3,
        }
    )
    score = (
        df["a"] + df["b"] / 40 + 1.5 * (df["cat"] == "x") - (df["cat"] == "w") + 0.8 * df["flag"]
    ).to_numpy() + rng.normal(0.0, 0.5, n)
    df.loc[rng.random(n) < 0.1, "a"] = np.nan
    df.loc[rng.random(n) < 0.05, "cat"] = np.nan
    held = df.index >= N_TRAIN
    df.loc[held & (rng.random(n) < 0.05), "cat"] = "unseen"
    if task == "binary":
        y: np.ndarray = np.where(score > np.median(score), "FRAUD", "OK")
    elif task == "multiclass":
        y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    else:
        y = score * 10.0 + 3.0
    return df.iloc[:N_TRAIN], df.iloc[N_TRAIN:].reset_index(drop=True), y[:N_TRAIN]


def prepare() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), ["a", "b"]),
            ("minmax", MinMaxScaler(), ["c", "flag"]),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                ["cat"],
            ),
        ]
    )


def assert_matches(pkg: Package, model: Any, held: pd.DataFrame, task: str) -> None:
    if task == "regression":
        (value,) = pkg.predict(held)
        expected = model.predict(held)
        np.testing.assert_allclose(np.asarray(value).reshape(-1), expected, rtol=1e-4, atol=1e-6)
        return
    labels, probas = pkg.predict(held)
    assert pkg.endpoint()["classes"] == model.classes_.tolist()
    assert np.asarray(labels).reshape(-1).tolist() == model.predict(held).tolist()
    np.testing.assert_allclose(probas, model.predict_proba(held), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_pipeline_matches_sklearn(tmp_path: Path, name: str, task: str) -> None:
    train, held, y = make_data(task)
    estimator = (CLASSIFIERS | REGRESSORS)[name]()
    model = Pipeline([("prepare", prepare()), ("model", estimator)]).fit(train, y)
    folder = write_service(tmp_path / "svc", model, sample=held)

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    parity = report.parity["score"]
    assert parity.passed and parity.rows == N_HELD and parity.precision == "double"
    pkg = Package(report.out)
    ep = pkg.endpoint()
    assert ep["task"] == task
    assert ep["estimator"] == (
        "Pipeline(ColumnTransformer(Pipeline(SimpleImputer, StandardScaler), MinMaxScaler, "
        f"Pipeline(SimpleImputer, OneHotEncoder)), {name})"
    )
    assert ep["model"]["input_mode"] == "columns"
    feats = {f["name"]: f for f in ep["features"]}
    assert list(feats) == ["a", "b", "c", "cat", "flag"]
    assert {n: f["type"] for n, f in feats.items()} == {
        "a": "float",
        "b": "float",
        "c": "int",
        "cat": "string",
        "flag": "bool",
    }
    assert feats["a"]["onnx_type"] == "double" and feats["cat"]["onnx_type"] == "string"
    native = name.startswith("HistGradientBoosting")
    assert {n: f["nullable"] for n, f in feats.items()} == {
        "a": True,
        "b": True,  # imputed
        "c": native,  # NaN flows through MinMaxScaler into HistGradientBoosting only
        "cat": True,
        "flag": native,
    }
    if task == "regression":
        assert ep["model"]["value_output"] and ep["classes"] is None
        assert ep["parity"]["max_rel_error"] <= 1e-4
    else:
        assert ep["parity"]["classes_identical"] is True
        assert ep["parity"]["max_abs_proba_diff"] <= 1e-4
    assert_matches(pkg, model, held, task)


def test_histgradientboosting_nulls_fed_as_nan(tmp_path: Path) -> None:
    """HistGradientBoosting routes NaN itself: null numbers reach it unimputed."""
    train, held, y = make_data("binary", seed=11)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["a", "b", "c"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"]),
        ]
    )
    train = train.assign(cat=train["cat"].fillna("x"))
    held = held.assign(cat=held["cat"].fillna("y"))
    held.loc[held.index % 7 == 0, "b"] = np.nan
    model = Pipeline([("p", pre), ("m", HistGradientBoostingClassifier(max_iter=20))]).fit(train, y)
    folder = write_service(tmp_path / "svc", model, sample=held.drop(columns=["flag"]))

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    pkg = Package(report.out)
    feats = {f["name"]: f["nullable"] for f in pkg.endpoint()["features"]}
    # cat: OneHotEncoder(handle_unknown="ignore") maps a null to zeros, as scikit-learn does
    assert feats == {"a": True, "b": True, "c": True, "cat": True}
    assert report.parity["score"].rows == N_HELD
    assert_matches(pkg, model, held, "binary")


def test_matrix_mode_logistic_regression_on_an_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(450, 4))
    y = (x[:, 0] - 2 * x[:, 1] + x[:, 2] * x[:, 3] > 0).astype(int)
    model = LogisticRegression().fit(x[:200], y[:200])
    names = ["amount", "age", "score_a", "score_b"]
    held = pd.DataFrame(x[200:], columns=names)
    folder = write_service(
        tmp_path / "svc",
        model,
        features={"amount": "float", "age": "float", "score_a": "float", "score_b": "float"},
        sample=held,
    )

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    pkg = Package(report.out)
    ep = pkg.endpoint()
    assert ep["model"]["input_mode"] == "matrix"
    assert ep["model"]["input_name"] in [i.name for i in pkg.session().get_inputs()]
    assert [f["name"] for f in ep["features"]] == names
    assert {f["onnx_type"] for f in ep["features"]} == {"double"}
    assert ep["classes"] == [0, 1] and all(type(c) is int for c in ep["classes"])
    assert ep["parity"]["rows"] == 250
    labels, probas = pkg.predict(held)
    assert labels.reshape(-1).tolist() == model.predict(x[200:]).tolist()
    np.testing.assert_allclose(probas, model.predict_proba(x[200:]), atol=1e-4)


def test_matrix_mode_default_names_and_bool_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] + x[:, 1] > 0
    model = Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]).fit(x, y)
    queries = [{"features": {"f0": 0.5, "f1": -1.0, "f2": 2}}, {"features": {"f0": 3, "f1": 1, "f2": 0}}]
    folder = write_service(tmp_path / "svc", model, test_queries=queries)

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    ep = Package(report.out).endpoint()
    assert [f["name"] for f in ep["features"]] == ["f0", "f1", "f2"]
    assert ep["classes"] == [False, True]
    assert ep["parity"] == {
        "rows": 2,
        "source": "test_queries",
        "max_abs_proba_diff": ep["parity"]["max_abs_proba_diff"],
        "classes_identical": True,
        "tolerance": 1e-4,
    }


def test_matrix_mode_regression_with_imputer_is_nullable(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 4.0
    x[rng.random(x.shape) < 0.1] = np.nan
    model = Pipeline([("i", SimpleImputer()), ("m", Ridge())]).fit(x[:150], y[:150])
    held = pd.DataFrame(x[150:], columns=["p", "q", "r"])
    folder = write_service(tmp_path / "svc", model, features={"p": "float", "q": "float", "r": "float"}, sample=held)

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    pkg = Package(report.out)
    assert all(f["nullable"] for f in pkg.endpoint()["features"])
    assert report.parity["score"].rows == 250
    (value,) = pkg.predict(held)
    np.testing.assert_allclose(value.reshape(-1), model.predict(x[150:]), rtol=1e-9)


@pytest.mark.parametrize("name", ["XGBClassifier", "LGBMClassifier", "XGBRegressor", "LGBMRegressor"])
def test_boosters(tmp_path: Path, name: str) -> None:
    import importlib

    module = importlib.import_module("xgboost" if name.startswith("XGB") else "lightgbm")
    task = "regression" if name.endswith("Regressor") else "binary"
    train, held, y = make_data(task)
    if task == "binary":
        y = (y == "FRAUD").astype(int)
    kwargs = {"verbosity": 0} if name.startswith("XGB") else {"verbose": -1}
    estimator = getattr(module, name)(n_estimators=15, max_depth=4, **kwargs)
    model = Pipeline([("prepare", prepare()), ("model", estimator)]).fit(train, y)
    folder = write_service(tmp_path / "svc", model, sample=held)

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    assert report.parity["score"].passed
    assert_matches(Package(report.out), model, held, task)


def test_xgboost_on_a_dataframe_behind_a_scaler_on_discrete_data(tmp_path: Path) -> None:
    """Ages and rounded amounts sit exactly on XGBoost's float32 splits: the graph scales in
    double (as scikit-learn) and rounds to float32 just before the trees, with the splits
    as the float32 XGBoost holds; feature names are the DataFrame's, not f0, f1, ..."""
    import xgboost

    rng = np.random.default_rng(0)
    n = 1500
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "amount": rng.gamma(2, 300, n).round(-1),
            "visits": rng.integers(0, 12, n),
        }
    )
    y = (((df.age > 45) ^ (df.amount > 600)) | (df.visits > 8)).astype(int).to_numpy()
    xgb = xgboost.XGBClassifier(n_estimators=40, max_depth=6, verbosity=0)
    model = Pipeline([("s", StandardScaler()), ("m", xgb)]).fit(df.iloc[:1000], y[:1000])
    folder = write_service(tmp_path / "svc", model, sample=df.iloc[1000:])

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    parity = report.parity["score"]
    assert parity.precision == "double" and parity.rows == 500
    assert parity.max_abs_proba_diff is not None and parity.max_abs_proba_diff <= 1e-6
    pkg = Package(report.out)
    assert [f["name"] for f in pkg.endpoint()["features"]] == ["age", "amount", "visits"]
    assert all(f["nullable"] for f in pkg.endpoint()["features"])  # XGBoost routes NaN itself
    assert_matches(pkg, model, df.iloc[1000:].reset_index(drop=True), "binary")


def test_near_ties_rounded_by_sklearn_are_ties(tmp_path: Path) -> None:
    """Duplicated points with different labels: a 4-tree forest gives [0.5, 0.5], which
    scikit-learn's sum of per-tree probabilities rounds to [0.49999999999999994, 0.5] on
    some rows; ONNX sums exactly. Both are ties: the node answers the first class, and the
    parity check does not refuse the model for it."""
    rng = np.random.default_rng(0)
    for _ in range(2):  # the same draws as the rows where this was seen
        rng.normal(size=(60, 2))
    x = pd.DataFrame(np.repeat(rng.normal(size=(60, 2)), 2, axis=0), columns=["p", "q"])
    y = np.arange(len(x)) % 2
    model = Pipeline([("s", StandardScaler()), ("m", RandomForestClassifier(4, random_state=0))]).fit(x, y)
    proba = model.predict_proba(x)
    near = np.flatnonzero((proba[:, 0] != proba[:, 1]) & (np.abs(proba[:, 0] - proba[:, 1]) < 1e-12))
    assert len(near) > 0 and (model.predict(x)[near] == 1).all()  # scikit-learn picks the second
    folder = write_service(tmp_path / "svc", model, sample=x)

    report = compile_service(folder, tmp_path / "svc.apz", progress=False)

    assert report.parity["score"].passed and report.parity["score"].classes_identical is True
    labels, _ = Package(report.out).predict(x)
    assert (np.asarray(labels)[near] == 0).all()  # the first of the tied classes
