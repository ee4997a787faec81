"""Trains the fraud example: synthetic card transactions -> a fitted Pipeline.

Writes, next to this file (all generated, git-ignored):
  data/customers.csv   the customers dataset bundled with the service (3,000 rows)
  model.joblib         Pipeline(ColumnTransformer(StandardScaler, OneHotEncoder),
                       HistGradientBoostingClassifier) predicting "FRAUD" / "OK"
  data/sample.csv      held-out transactions for the compiler's parity check

Deterministic (fixed seeds) and fast (a few seconds). Then:
  apinode compile examples/fraud -o build/fraud.apz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
SEED = 20240601
N_CUSTOMERS = 3000
N_TRANSACTIONS = 24000
N_SAMPLE = 400

CATEGORIES = {  # category: (share of transactions, fraud log-odds bump, median amount)
    "grocery": (0.26, -0.8, 35.0),
    "restaurant": (0.16, -0.5, 28.0),
    "fuel": (0.12, -0.3, 55.0),
    "entertainment": (0.08, 0.0, 40.0),
    "online_retail": (0.14, 0.7, 60.0),
    "travel": (0.08, 0.9, 320.0),
    "electronics": (0.10, 1.2, 180.0),
    "jewelry": (0.06, 1.5, 250.0),
}
COUNTRIES = {
    "FR": (0.35, 0.0),
    "DE": (0.2, -0.1),
    "GB": (0.15, 0.1),
    "ES": (0.12, 0.2),
    "US": (0.1, 0.4),
    "BR": (0.08, 0.7),
}
NUMERIC = ["amount", "hour", "distance_from_home", "card_present", "age", "account_age_days"]
CATEGORICAL = ["merchant_category", "country"]
FEATURES = NUMERIC[:1] + CATEGORICAL[:1] + NUMERIC[1:] + CATEGORICAL[1:]


def customers(rng: np.random.Generator) -> pd.DataFrame:
    country_names = list(COUNTRIES)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(N_CUSTOMERS)],
            "age": rng.integers(18, 86, N_CUSTOMERS),
            "account_age_days": rng.gamma(2.0, 700.0, N_CUSTOMERS).astype(int),
            "country": rng.choice(country_names, N_CUSTOMERS, p=[COUNTRIES[c][0] for c in country_names]),
        }
    )


def transactions(rng: np.random.Generator, cust: pd.DataFrame) -> pd.DataFrame:
    n = N_TRANSACTIONS
    names = list(CATEGORIES)
    category = rng.choice(names, n, p=[CATEGORIES[c][0] for c in names])
    median = np.array([CATEGORIES[c][2] for c in category])
    amount = np.round(median * rng.lognormal(0.0, 0.9, n), 2)
    hour = rng.choice(24, n, p=_hour_weights())
    distance = np.round(rng.exponential(12.0, n), 1)
    distance[rng.random(n) < 0.03] = np.nan  # no location for some transactions
    online = category == "online_retail"
    card_present = rng.random(n) < np.where(online, 0.05, 0.85)
    who = cust.iloc[rng.integers(0, len(cust), n)].reset_index(drop=True)
    logit = (
        -4.2
        + 0.9 * (np.log(amount) - np.log(median))
        + np.array([CATEGORIES[c][1] for c in category])
        + 1.3 * ((hour <= 5) | (hour >= 23))
        + 0.025 * np.minimum(np.nan_to_num(distance, nan=20.0), 150.0)
        + 1.1 * ~card_present
        - 0.0005 * who["account_age_days"].to_numpy()
        + 0.7 * (who["age"].to_numpy() < 25)
        + np.array([COUNTRIES[c][1] for c in who["country"]])
    )
    fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame(
        {
            "customer_id": who["customer_id"],
            "amount": amount,
            "merchant_category": category,
            "hour": hour,
            "distance_from_home": distance,
            "card_present": card_present,
            "age": who["age"],
            "account_age_days": who["account_age_days"],
            "country": who["country"],
            "label": np.where(fraud, "FRAUD", "OK"),
        }
    )


def _hour_weights() -> np.ndarray:
    w = np.array(
        [
            0.4,
            0.3,
            0.2,
            0.2,
            0.2,
            0.3,
            0.8,
            1.5,
            2.2,
            2.5,
            2.6,
            2.8,
            3.2,
            3.0,
            2.7,
            2.6,
            2.7,
            3.0,
            3.3,
            3.0,
            2.4,
            1.8,
            1.2,
            0.7,
        ]
    )
    return w / w.sum()


def model() -> Pipeline:
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    clf = HistGradientBoostingClassifier(max_iter=50, max_depth=6, learning_rate=0.15, random_state=SEED)
    return Pipeline([("prepare", pre), ("classify", clf)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: next to this file)")
    out = parser.parse_args().out
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    cust = customers(rng)
    tx = transactions(rng, cust)
    train, sample = tx.iloc[:-N_SAMPLE], tx.iloc[-N_SAMPLE:]
    pipe = model().fit(train[FEATURES], train["label"])
    fraud_col = list(pipe.classes_).index("FRAUD")
    auc = roc_auc_score(sample["label"] == "FRAUD", pipe.predict_proba(sample[FEATURES])[:, fraud_col])
    (out / "data").mkdir(parents=True, exist_ok=True)
    cust.to_csv(out / "data" / "customers.csv", index=False)
    sample.to_csv(out / "data" / "sample.csv", index=False)
    joblib.dump(pipe, out / "model.joblib")
    print(
        f"trained on {len(train)} transactions ({(train['label'] == 'FRAUD').mean():.1%} fraud), "
        f"held-out AUC {auc:.3f}; wrote model.joblib, data/customers.csv, data/sample.csv "
        f"to {out} in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
