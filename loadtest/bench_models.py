"""Service folders for the benchmark suite: a logistic regression and a random forest on
the same synthetic card transactions, compiled with the real compiler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CATEGORIES = ["grocery", "travel", "electronics", "fuel", "online"]


def _data(n: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, n).round(2),
            "hour": rng.integers(0, 24, n).astype(float),
            "distance": rng.exponential(20.0, n).round(3),
            "merchant_category": rng.choice(CATEGORIES, n),
        }
    )


def build(kind: str, root: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Writes and compiles the `kind` ("logreg" or "forest") service; returns the package
    and request bodies (held-out rows)."""
    import joblib
    import numpy as np
    import yaml
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from compiler import compile_service

    train, held = _data(4000, 1), _data(300, 2)
    y = np.where(
        train["amount"] / 100 - train["distance"] / 30 + (train["merchant_category"] == "online") > 0.8, "FRAUD", "OK"
    )
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["amount", "hour", "distance"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
        ]
    )
    clf: Any = (
        LogisticRegression(max_iter=500)
        if kind == "logreg"
        else RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0)
    )
    model = Pipeline([("prep", prep), ("clf", clf)]).fit(train, y)
    folder = root / kind
    (folder / "data").mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    held.to_csv(folder / "data" / "sample.csv", index=False)
    service = {
        "service": kind,
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
    (folder / "service.yaml").write_text(yaml.safe_dump(service, sort_keys=False))
    report = compile_service(folder, root / f"{kind}.apz", progress=False)
    return report.out, [{"features": r} for r in held.to_dict(orient="records")]
