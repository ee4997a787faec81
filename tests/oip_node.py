"""One live node for the Open Inference Protocol tests, and scikit-learn's own answers.

It serves `fraud.score` (a logistic regression on three numeric features: the matrix input)
in generations v1 and v2 (v2 answers; v1 stays loaded at probability 0), `guarded.score`
(the same model behind an API key), `shop.score` (a compiled pipeline with a string category:
one input per feature) and `rent.score` (a compiled random-forest regression).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import requests
import yaml

from compiler import compile_service
from tests.inproc import InProcNode, run_node
from tests.node.test_parity import binary_lr, dataset, rf_regression
from tests.packages import logistic_package

KEY = "oip-secret-key"


@dataclass
class Served:
    node: InProcNode
    fraud: Any  # the fitted LogisticRegression of fraud.score
    shop: Any  # the fitted pipeline of shop.score
    rent: Any  # the fitted pipeline of rent.score
    held_out: pd.DataFrame  # rows for shop and rent

    def fraud_x(self, n: int = 6, seed: int = 1) -> np.ndarray[Any, Any]:
        """Rows for fraud.score: its 'hour' is an integer feature."""
        x = np.random.default_rng(seed).normal(size=(n, 3))
        x[:, 1] = np.round(x[:, 1] * 3)
        return x


def _compiled(tmp: Path, service: str, fit: Any) -> tuple[Path, Any]:
    rng = np.random.default_rng(0)
    train = dataset(600, 1)
    model, _ = fit(train, rng)
    folder = tmp / service
    (folder / "data").mkdir(parents=True)
    joblib.dump(model, folder / "model.joblib")
    dataset(50, 3).to_csv(folder / "data" / "sample.csv", index=False)
    spec = {
        "service": service,
        "version": "v1",
        "endpoints": {
            "score": {
                "type": "prediction",
                "model": "model.joblib",
                "features": {"amount": "float", "hour": "float", "distance": "float", "merchant_category": "string"},
                "sample": "data/sample.csv",
            }
        },
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return compile_service(folder, tmp / f"{service}.apz", progress=False).out, model


@contextmanager
def served(tmp: Path) -> Iterator[Served]:
    v1, fraud = logistic_package(tmp)
    v2, _ = logistic_package(tmp, version="v2")
    guarded, _ = logistic_package(tmp, service="guarded")
    shop_pkg, shop = _compiled(tmp, "shop", binary_lr)
    rent_pkg, rent = _compiled(tmp, "rent", rf_regression)
    keys = tmp / "data" / "config" / "services" / "guarded" / "api_keys.json"
    keys.parent.mkdir(parents=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "oip", "key": KEY}]}))
    with run_node(tmp / "data", v1, v2, guarded, shop_pkg, rent_pkg) as node:
        mapping = {"entries": [{"generation": "v2", "proba": 1.0}, {"generation": "v1", "proba": 0.0}]}
        r = requests.post(
            node.http + "/admin/api/services/fraud/actions/setMapping",
            json=mapping,
            headers=node.admin_headers(),
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield Served(node, fraud, shop, rent, dataset(40, 2))
