"""The node's answers equal scikit-learn's: service folder -> apinode compile -> node -> caller.

For a logistic regression pipeline with one-hot categories, a random-forest regression and
a multi-class HistGradientBoosting, on >= 200 held-out rows: classes identical,
probabilities within 1e-4 (regression: relative 1e-4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from compiler import compile_service
from tests.inproc import run_node

CATEGORIES = ["grocery", "travel", "electronics", "fuel", "online"]
NUMERIC = ["amount", "hour", "distance"]


def dataset(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n).round(2),
            "hour": rng.integers(0, 24, n).astype(float),
            "distance": rng.exponential(20.0, n).round(3),
            "merchant_category": rng.choice(CATEGORIES, n),
        }
    )


def preprocessing() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
        ]
    )


def binary_lr(x: pd.DataFrame, rng: np.random.Generator) -> tuple[Any, Any]:
    score = x["amount"] / 100 - x["distance"] / 30 + (x["merchant_category"] == "online") * 1.5
    y = np.where(score + rng.normal(0, 0.5, len(x)) > 0.8, "FRAUD", "OK")
    return Pipeline([("prep", preprocessing()), ("clf", LogisticRegression(max_iter=500))]).fit(x, y), y


def rf_regression(x: pd.DataFrame, rng: np.random.Generator) -> tuple[Any, Any]:
    y = x["amount"] * 0.3 + x["hour"] * 2 + rng.normal(0, 1, len(x))
    model = Pipeline(
        [("prep", preprocessing()), ("rf", RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0))]
    )
    return model.fit(x, y), y


def hgb_multiclass(x: pd.DataFrame, rng: np.random.Generator) -> tuple[Any, Any]:
    y = np.digitize(x["amount"] + rng.normal(0, 10, len(x)), [60, 110, 170])  # integer labels 0..3
    model = Pipeline([("prep", preprocessing()), ("hgb", HistGradientBoostingClassifier(max_iter=30, random_state=0))])
    return model.fit(x, y), y


CASES = {"lr-binary": binary_lr, "rf-regression": rf_regression, "hgb-multiclass": hgb_multiclass}


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_answers_equal_scikit_learn(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(0)
    train, held_out = dataset(1500, 1), dataset(250, 2)
    model, _ = CASES[case](train, rng)
    folder = tmp_path / "svc"
    (folder / "data").mkdir(parents=True)
    joblib.dump(model, folder / "model.joblib")
    held_out.to_csv(folder / "data" / "sample.csv", index=False)
    service = {
        "service": "parity",
        "version": "v1",
        "endpoints": {
            "score": {
                "type": "prediction",
                "model": "model.joblib",
                "features": {"amount": "float", "hour": "float", "distance": "float", "merchant_category": "string"},
                "sample": "data/sample.csv",
                "pool": {"queue": 64},
            }
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(service, sort_keys=False))
    report = compile_service(folder, tmp_path / "parity.apz", progress=False)
    records = held_out.to_dict(orient="records")
    with run_node(tmp_path / "data", report.out) as node:
        r = requests.post(
            node.url("parity", "score", "predict-multi"), json={"items": [{"features": f} for f in records]}
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        singles = [
            requests.post(node.url("parity", "score", "predict"), json={"features": f}).json()["result"]
            for f in records[:20]
        ]
    assert len(results) == len(held_out) >= 200
    assert singles == results[:20]
    if case == "rf-regression":
        got = np.array([res["prediction"] for res in results])
        want = model.predict(held_out)
        assert np.all(np.abs(got - want) <= 1e-4 * np.maximum(np.abs(want), 1.0))
        return
    want_labels = model.predict(held_out).tolist()
    assert [res["prediction"] for res in results] == want_labels  # same labels, same JSON types
    classes = model.classes_.tolist()
    got_p = np.array([[res["probas"][str(c)] for c in classes] for res in results])
    assert np.abs(got_p - model.predict_proba(held_out)).max() < 1e-4
