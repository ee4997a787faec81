"""Enrichment on a `custom-prediction` endpoint, compiled and served by a real node: the
user's class receives the features the node filled in from a bundled dataset."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dataikuapi
import grpc
import requests

from compiler.build import compile_service
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.inproc import run_node

CUSTOMERS = """\
customer_id,age,country
C1,34,FR
C2,61,DE
C3,,ES
"""

CODE = """
import pandas as pd


class Risk:
    def predict(self, df):
        # the row as the class received it: which values reached it, and that it got a frame
        assert list(df.columns) == ["amount", "age", "country"], list(df.columns)
        labels = [f"{r.country}|{'none' if pd.isna(r.age) else int(r.age)}|{r.amount:g}" for r in df.itertuples()]
        high = [min(1.0, r.amount / 1000) for r in df.itertuples()]
        return labels, pd.DataFrame({"HIGH": high, "LOW": [1 - h for h in high]})
"""

SERVICE = """\
service: custom
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  risk:
    type: custom-prediction
    file: code/risk.py
    class: Risk
    features: {amount: float, age: int, country: string}
    enrich:
      - dataset: customers
        keys: {customer_id: customer}
        columns: [age, country]
    test_queries: [{features: {customer: C1, amount: 10.0}}]
"""


def test_custom_prediction_is_enriched_from_a_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    (folder / "code").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "customers.csv").write_text(CUSTOMERS)
    (folder / "code" / "risk.py").write_text(textwrap.dedent(CODE))
    (folder / "service.yaml").write_text(SERVICE)
    pkg = compile_service(folder, tmp_path / "custom.apz", progress=False).out
    with run_node(tmp_path / "data", pkg) as node:
        client = dataikuapi.APINodeClient(node.http + "/", "custom")
        out = client.predict_record("risk", {"customer": "C2", "amount": 250.0})["result"]
        assert out == {"prediction": "DE|61|250", "probas": {"HIGH": 0.25, "LOW": 0.75}, "ignored": False}
        # what the caller sent wins; a null in the dataset reaches the class as a null
        assert client.predict_record("risk", {"customer": "C2", "amount": 1.0, "age": 40})["result"]["prediction"] == (
            "DE|40|1"
        )
        assert client.predict_record("risk", {"customer": "C3", "amount": 5.0})["result"]["prediction"] == "ES|none|5"

        r = requests.post(
            node.url("custom", "risk", "predict-multi"),
            json={
                "items": [{"features": {"customer": c, "amount": 100.0}} for c in ("C1", "nobody", "C2")],
                "returnEnriched": True,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x.get("prediction") for x in results] == ["FR|34|100", None, "DE|61|100"]
        assert results[1]["ignored"] is True and results[1]["ignoreReason"] == "NO_LOOKUP_MATCH"  # default policy
        assert results[0]["enrichedFeatures"] == {"customer": "C1", "amount": 100.0, "age": 34, "country": "FR"}
        assert results[1]["enrichedFeatures"] == {"customer": "nobody", "amount": 100.0}

        r = requests.post(node.url("custom", "risk", "predict"), json={"features": {"amount": 1.0}}, timeout=30)
        assert r.status_code == 400 and "'customer'" in r.json()["message"]  # on_missing_key defaults to fail

        with grpc.insecure_channel(node.grpc) as ch:
            got = pbg.ApiNodeStub(ch).Predict(
                pb.PredictRequest(
                    service="custom",
                    endpoint="risk",
                    features={"customer": pb.Value(text="C1"), "amount": pb.Value(number=20.0)},
                    return_enriched=True,
                )
            )
        assert got.result.prediction.text == "FR|34|20"
        assert got.result.enriched_features["age"].integer == 34
