"""The bundled fraud example on a live node: trained by its own train.py, compiled by the
real compiler, served by `apinode serve`, called with the Dataiku client.

`score` takes a transaction and a `customer_id` and completes the customer's features from
the `customers` dataset (examples/fraud/service.yaml: no customer_id fails the request, an
unknown one is ignored); `customer` answers the same rows as a lookup endpoint (an unknown id
answers nulls).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import dataikuapi
import joblib
import pandas as pd
import pytest
import requests

from tests.inproc import InProcNode, run_node
from tests.node.fraudpkg import build_fraud

Customers = dict[str, dict[str, Any]]  # customer_id -> the columns enrichment fetches
CUSTOMER_COLUMNS = ["age", "account_age_days", "country"]
TXN: dict[str, Any] = {
    "amount": 1899.0,
    "merchant_category": "electronics",
    "hour": 3,
    "distance_from_home": 240.0,
    "card_present": False,
}


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcNode, Customers, Any]]:
    tmp = tmp_path_factory.mktemp("fraud")
    pkg = build_fraud(tmp)
    folder = tmp / "fraud"
    with open(folder / "data" / "customers.csv", newline="") as f:
        customers = {
            row["customer_id"]: {
                "age": int(row["age"]),
                "account_age_days": int(row["account_age_days"]),
                "country": row["country"],
            }
            for row in csv.DictReader(f)
        }
    with run_node(tmp / "data", pkg) as node:
        yield node, customers, joblib.load(folder / "model.joblib")


def _sklearn(model: Any, features: dict[str, Any]) -> tuple[str, float]:
    """The original pipeline's label and P(FRAUD) for one transaction."""
    row = pd.DataFrame([features])[list(model.feature_names_in_)]
    proba = dict(zip(model.classes_, model.predict_proba(row)[0], strict=True))
    return str(model.predict(row)[0]), float(proba["FRAUD"])


def test_score_completes_the_customer_from_the_dataset(fraud: tuple[InProcNode, Customers, Any]) -> None:
    node, customers, model = fraud
    client = dataikuapi.APINodeClient(node.http + "/", "fraud")
    cid = "C00123"
    known = customers[cid]

    out = client.predict_record("score", {**TXN, "customer_id": cid})["result"]
    assert out["ignored"] is False and out["prediction"] in ("FRAUD", "OK")
    assert set(out["probas"]) == {"FRAUD", "OK"} and sum(out["probas"].values()) == pytest.approx(1.0)
    # the model saw the customer's features from the table: scikit-learn on the same row agrees
    label, proba = _sklearn(model, {**TXN, **known})
    assert out["probas"]["FRAUD"] == pytest.approx(proba, abs=1e-4) and out["prediction"] == label
    # features the caller sends win over the table's (override is false)
    mine = {"age": 19, "account_age_days": 3, "country": "BR"}
    assert mine != known
    sent = client.predict_record("score", {**TXN, "customer_id": cid, **mine})["result"]
    assert sent["probas"]["FRAUD"] == pytest.approx(_sklearn(model, {**TXN, **mine})[1], abs=1e-4)
    assert sent["probas"]["FRAUD"] != pytest.approx(out["probas"]["FRAUD"], abs=1e-3)

    r = requests.post(
        node.url("fraud", "score", "predict"),
        json={"features": {**TXN, "customer_id": cid}, "returnEnriched": True},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    enriched = r.json()["result"]["enrichedFeatures"]
    assert enriched == {**TXN, "customer_id": cid, **known}

    # the lookup endpoint answers the same values the enrichment used
    looked_up = client.lookup_record("customer", {"customer_id": cid})
    assert looked_up == {"data": {"customer_id": cid, **{c: enriched[c] for c in CUSTOMER_COLUMNS}}}
    assert type(looked_up["data"]["age"]) is type(enriched["age"]) is int


def test_unknown_and_missing_customers_follow_the_declared_policies(
    fraud: tuple[InProcNode, Customers, Any],
) -> None:
    node, customers, _ = fraud
    client = dataikuapi.APINodeClient(node.http + "/", "fraud")
    assert "C99999" not in customers
    # on_no_match: ignore
    assert client.predict_record("score", {**TXN, "customer_id": "C99999"})["result"] == {
        "ignored": True,
        "ignoreReason": "NO_LOOKUP_MATCH",
    }
    multi = client.predict_records(
        "score", [{"features": {**TXN, "customer_id": c}} for c in ("C00001", "C99999", "C00002")]
    )["results"]
    assert [r["ignored"] for r in multi] == [False, True, False]
    assert multi[1]["ignoreReason"] == "NO_LOOKUP_MATCH"
    # on_missing_key: fail, a 400 naming the key
    r = requests.post(node.url("fraud", "score", "predict"), json={"features": TXN}, timeout=30)
    assert r.status_code == 400 and "customer_id" in r.json()["message"]
    with pytest.raises(dataikuapi.utils.DataikuException):
        client.predict_record("score", TXN)
    # the lookup endpoint's on_no_match: "null"
    assert client.lookup_record("customer", {"customer_id": "C99999"}) == {
        "data": {"customer_id": None, "age": None, "account_age_days": None, "country": None},
        "ignored": True,
        "ignoreReason": "NO_LOOKUP_MATCH",
    }
