"""The bundled example: train.py runs, the folder compiles, parity passes, the package runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from compiler import compile_service
from tests.compiler.helpers import ROOT, Package

EXAMPLE = ROOT / "examples" / "fraud"


def test_fraud_example_trains_and_compiles(tmp_path: Path) -> None:
    folder = tmp_path / "fraud"
    folder.mkdir()
    for name in ("train.py", "service.yaml"):
        shutil.copy(EXAMPLE / name, folder / name)
    shutil.copytree(EXAMPLE / "code", folder / "code", ignore=shutil.ignore_patterns("__pycache__"))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, str(folder / "train.py")], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, run.stderr
    assert (folder / "model.joblib").is_file() and (folder / "data" / "customers.csv").is_file()

    report = compile_service(folder, tmp_path / "fraud.apz", progress=False)

    parity = report.parity["score"]
    assert parity.passed and parity.rows >= 200 and parity.classes_identical
    assert parity.precision == "double"
    pkg = Package(report.out)
    score = pkg.endpoint("score")
    assert score["classes"] == ["FRAUD", "OK"] and score["task"] == "binary"
    assert [f["name"] for f in score["features"]] == [
        "amount",
        "merchant_category",
        "hour",
        "distance_from_home",
        "card_present",
        "age",
        "account_age_days",
        "country",
    ]
    assert score["pool"]["ceil"] >= 1 and score["test_queries"] == "tests/score.json"
    assert pkg.endpoint("explain")["code"] == {
        "path": "code/rules.py",
        "root": "code",
        "function": "explain",
    }
    assert pkg.manifest["datasets"]["customers"]["rows"] >= 1000
    assert {"name": "age", "type": "int"} in pkg.manifest["datasets"]["customers"]["schema"]
    assert score["enrich"][0]["dataset"] == "customers"
    assert score["enrich"][0]["keys"] == {"customer_id": "customer_id"}
    assert pkg.endpoint("customer")["type"] == "lookup"

    model = joblib.load(folder / "model.joblib")
    final = model.steps[-1][1]
    assert final.n_iter_ <= 50 and (final.max_depth or 0) <= 8
    sample = pd.read_csv(folder / "data" / "sample.csv")
    labels, probas = pkg.predict(sample)
    features = sample[[f["name"] for f in score["features"]]]
    assert labels.reshape(-1).tolist() == model.predict(features).tolist()
    np.testing.assert_allclose(probas, model.predict_proba(features), atol=1e-4)
