"""Dataset lookup endpoints and enrichment of predictions, compiled from a service folder
and served by a real node; called with the Dataiku client, raw HTTP and gRPC."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LogisticRegression

from compiler.build import compile_service
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.inproc import InProcNode, run_node
from tests.pg import PgServer

CUSTOMERS = """\
customer_id,age,tenure_days,country,since,vip
C1,34,1200,FR,2019-03-04,true
C2,61,,DE,2011-07-30,false
C3,22,40,ES,2024-01-15,
C4,45,800,FR,2016-05-01,true
C4,46,801,IT,2016-05-02,false
C5,30,10,,2020-01-01,true
"""

SERVICE = """\
service: shop
version: v1
datasets:
  customers: data/customers.csv
  accounts: data/accounts.parquet
endpoints:
  account:
    type: lookup
    dataset: accounts
    keys: [bank, number]
  customer:
    type: lookup
    dataset: customers
    keys: customer_id
    test_queries: [{data: {customer_id: C1}}]
  customer_strict:
    type: lookup
    dataset: customers
    keys: [customer_id]
    columns: [age, country]
    on_no_match: fail
    on_multiple: fail
  score:
    type: prediction
    model: model.joblib
    features: {amount: float, age: int, tenure_days: {type: float, nullable: true}}
    enrich:
      - dataset: customers
        keys: {customer_id: customer}
        columns: [age, tenure_days]
    test_queries: [{features: {customer: C1, amount: 10.0}}]
  score_lenient:
    type: prediction
    model: model.joblib
    features: {amount: float, age: int, tenure_days: {type: float, nullable: true}}
    enrich:
      - dataset: customers
        keys: {customer_id: customer}
        columns: {age: age, tenure_days: tenure_days}
        on_missing_key: ignore
        on_no_match: fail
        on_multiple: first
        override: true
"""


def _model() -> LogisticRegression:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(50, 20, 400), rng.integers(18, 80, 400), rng.normal(700, 300, 400)])
    y = np.where(x[:, 0] / 50 + x[:, 1] / 40 - x[:, 2] / 700 + rng.normal(0, 0.3, 400) > 1.5, "HIGH", "LOW")
    return LogisticRegression().fit(pd.DataFrame(x, columns=["amount", "age", "tenure_days"]), y)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcNode, LogisticRegression, Path]]:
    tmp = tmp_path_factory.mktemp("lookup")
    folder = tmp / "svc"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "customers.csv").write_text(CUSTOMERS)
    pd.DataFrame(
        {
            "bank": ["B1", "B1", "B2"],
            "number": [1, 2, 1],
            "opened": pd.to_datetime(["2020-01-02", "2021-03-04", "2022-05-06"]).date,
            "limit": pd.array([100, None, 300], dtype="Int64"),
        }
    ).to_parquet(folder / "data" / "accounts.parquet")
    (folder / "service.yaml").write_text(SERVICE)
    model = _model()
    joblib.dump(model, folder / "model.joblib")
    pkg = compile_service(folder, tmp / "shop.apz", progress=False).out
    with run_node(tmp / "data", pkg, args=["--query-log", str(tmp / "qlog")]) as node:
        yield node, model, tmp / "qlog"


def _proba(model: LogisticRegression, amount: float, age: int, tenure: float) -> float:
    x = pd.DataFrame([[amount, age, tenure]], columns=["amount", "age", "tenure_days"])
    return float(model.predict_proba(x)[0][list(model.classes_).index("HIGH")])


def test_dataiku_client_lookups_keep_types(served: tuple[InProcNode, Any, Path]) -> None:
    node, _, _ = served
    client = dataikuapi.APINodeClient(node.http + "/", "shop")
    one = client.lookup_record("customer", {"customer_id": "C2"})  # the client answers results[0]
    assert one["data"] == {
        "customer_id": "C2",
        "age": 61,
        "tenure_days": None,  # an int column with a hole: still ints, and null for the hole
        "country": "DE",
        "since": "2011-07-30",  # a date stays an ISO string
        "vip": False,
    }
    assert type(client.lookup_record("customer", {"customer_id": "C1"})["data"]["tenure_days"]) is int
    many = client.lookup_records("customer", [{"data": {"customer_id": k}} for k in ("C3", "nobody", "C4")])
    first, missing, several = many["results"]
    assert first["data"]["age"] == 22 and first["data"]["vip"] is None
    assert missing == {"data": dict.fromkeys(first["data"]), "ignored": True, "ignoreReason": "NO_LOOKUP_MATCH"}
    assert several["data"]["country"] == "FR" and several["matches"] == 2  # the first row in file order
    # an empty cell of a text column is a null, as in an SQL table built from the same CSV
    assert client.lookup_record("customer", {"customer_id": "C5"})["data"]["country"] is None


def test_parquet_dataset_with_a_composite_key(served: tuple[InProcNode, Any, Path]) -> None:
    node, _, _ = served
    url = node.url("shop", "account", "lookup-multi")
    items = [
        {"data": {"bank": "B1", "number": "2"}},
        {"data": {"bank": "B2", "number": 1}},
        {"data": {"bank": "B2", "number": 2}},
    ]
    got = requests.post(url, json={"items": items}).json()["results"]
    assert got[0]["data"] == {"bank": "B1", "number": 2, "opened": "2021-03-04", "limit": None}
    assert got[1]["data"] == {"bank": "B2", "number": 1, "opened": "2022-05-06", "limit": 300}
    assert got[2]["ignored"] is True


def test_lookup_policies_and_bad_keys_are_api_errors(served: tuple[InProcNode, Any, Path]) -> None:
    node, _, _ = served
    strict = node.url("shop", "customer_strict", "lookup")
    ok = requests.post(strict, json={"data": {"customer_id": "C1"}}).json()
    assert ok["results"] == [{"data": {"age": 34, "country": "FR"}}]
    r = requests.post(strict, json={"data": {"customer_id": "nobody"}})
    assert r.status_code == 404 and r.json()["errorType"] == "NO_LOOKUP_MATCH"
    r = requests.post(strict, json={"data": {"customer_id": "C4"}})
    assert r.status_code == 409 and r.json()["errorType"] == "MULTIPLE_LOOKUP_MATCHES"
    assert "2 rows" in r.json()["message"]
    r = requests.post(strict, json={"data": {"id": "C1"}})
    assert r.status_code == 400 and "customer_id" in r.json()["message"]
    r = requests.post(node.url("shop", "customer", "lookup"), json={"data": {"customer_id": {"x": 1}}})
    assert r.status_code == 400 and r.json()["errorType"] == "BAD_REQUEST"
    r = requests.post(
        node.url("shop", "customer", "lookup-multi"), json={"items": [{"data": {"customer_id": "C1"}}, 3]}
    )
    assert r.status_code == 400 and "items[1]" in r.json()["message"]
    r = requests.post(node.url("shop", "customer", "predict"), json={"features": {}})
    assert r.status_code == 400 and "lookup endpoint" in r.json()["message"]


def test_grpc_lookup(served: tuple[InProcNode, Any, Path]) -> None:
    node, _, _ = served
    with grpc.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        one = stub.Lookup(
            pb.LookupRequest(
                service="shop", endpoint="customer", items=[pb.LookupItem(data={"customer_id": pb.Value(text="C1")})]
            )
        )
        assert one.results[0].data["age"].integer == 34 and one.results[0].data["vip"].flag is True
        assert one.results[0].data["since"].text == "2019-03-04"
        items = [pb.LookupItem(data={"customer_id": pb.Value(text=k)}) for k in ("C2", "zz")]
        many = stub.Lookup(pb.LookupRequest(service="shop", endpoint="customer", items=items))
        assert many.results[0].data["country"].text == "DE"
        assert many.results[0].data["tenure_days"].WhichOneof("kind") == "null"
        assert many.results[1].ignored and many.results[1].ignore_reason == "NO_LOOKUP_MATCH"
        with pytest.raises(grpc.RpcError) as err:
            stub.Lookup(
                pb.LookupRequest(
                    service="shop",
                    endpoint="customer_strict",
                    items=[pb.LookupItem(data={"customer_id": pb.Value(text="no")})],
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_enrichment_completes_features(served: tuple[InProcNode, Any, Path]) -> None:
    node, model, _ = served
    client = dataikuapi.APINodeClient(node.http + "/", "shop")
    out = client.predict_record("score", {"customer": "C1", "amount": 80.0})
    assert out["result"]["probas"]["HIGH"] == pytest.approx(_proba(model, 80.0, 34, 1200), abs=1e-6)
    assert "enrich" in out["timing"]
    # what the caller sent wins over the dataset (age 50, not 34)
    out = client.predict_record("score", {"customer": "C1", "amount": 80.0, "age": 50})
    assert out["result"]["probas"]["HIGH"] == pytest.approx(_proba(model, 80.0, 50, 1200), abs=1e-6)
    # a null in the dataset leaves a nullable feature null: the model imputes it
    assert client.predict_record("score", {"customer": "C2", "amount": 80.0})["result"]["ignored"] is False
    # unknown customer (default policy: ignore) and several rows (default: ignore)
    assert client.predict_record("score", {"customer": "nobody", "amount": 1.0})["result"] == {
        "ignored": True,
        "ignoreReason": "NO_LOOKUP_MATCH",
    }
    assert client.predict_record("score", {"customer": "C4", "amount": 1.0})["result"]["ignoreReason"] == (
        "MULTIPLE_LOOKUP_MATCHES"
    )
    # no key (default policy: fail) -> 400 naming the feature
    r = requests.post(node.url("shop", "score", "predict"), json={"features": {"amount": 1.0}})
    assert r.status_code == 400 and "'customer'" in r.json()["message"]


def test_enrichment_policies_override_and_return_enriched(served: tuple[InProcNode, Any, Path]) -> None:
    node, model, _ = served
    url = node.url("shop", "score_lenient", "predict")
    out = requests.post(url, json={"features": {"customer": "C1", "amount": 80.0, "age": 50}, "returnEnriched": True})
    result = out.json()["result"]
    assert result["enrichedFeatures"] == {"customer": "C1", "amount": 80.0, "age": 34, "tenure_days": 1200}
    assert result["probas"]["HIGH"] == pytest.approx(_proba(model, 80.0, 34, 1200), abs=1e-6)  # override: true
    r = requests.post(url, json={"features": {"amount": 1.0}})
    assert r.json()["result"] == {"ignored": True, "ignoreReason": "MISSING_LOOKUP_KEY"}
    r = requests.post(url, json={"features": {"customer": "nobody", "amount": 1.0}})
    assert r.status_code == 404 and r.json()["errorType"] == "NO_LOOKUP_MATCH"
    several = requests.post(url, json={"features": {"customer": "C4", "amount": 1.0}, "returnEnriched": True})
    assert several.json()["result"]["enrichedFeatures"]["age"] == 45  # on_multiple: first
    multi = requests.post(
        node.url("shop", "score", "predict-multi"),
        json={
            "items": [{"features": {"customer": c, "amount": 70.0}} for c in ("C1", "nobody", "C3")],
            "returnEnriched": True,
        },
    ).json()["results"]
    assert [r["ignored"] for r in multi] == [False, True, False]
    assert multi[0]["probas"]["HIGH"] == pytest.approx(_proba(model, 70.0, 34, 1200), abs=1e-6)
    assert multi[2]["probas"]["HIGH"] == pytest.approx(_proba(model, 70.0, 22, 40), abs=1e-6)
    assert multi[2]["enrichedFeatures"]["tenure_days"] == 40


def test_grpc_enrichment_and_query_log(served: tuple[InProcNode, Any, Path]) -> None:
    node, model, qlog = served
    with grpc.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        req = pb.PredictRequest(
            service="shop",
            endpoint="score",
            features={"customer": pb.Value(text="C3"), "amount": pb.Value(number=33.0)},
            return_enriched=True,
            request_id="g1",
        )
        out = stub.Predict(req)
    assert out.result.probas["HIGH"] == pytest.approx(_proba(model, 33.0, 22, 40), abs=1e-6)
    assert out.result.enriched_features["age"].integer == 22

    def grpc_entry() -> dict[str, Any] | None:
        hits = [e for e in _read(qlog) if e.get("protocol") == "grpc" and e.get("enriched", {}).get("customer") == "C3"]
        return hits[0] if hits else None

    node.wait_for(lambda: grpc_entry() is not None, what="the gRPC query in the query log")
    entry = grpc_entry()
    assert entry is not None
    assert entry["enriched"]["tenure_days"] == 40 and entry["features"] == {"customer": "C3", "amount": 33.0}


def _read(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.glob("queries.jsonl*")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def test_push_plays_lookup_and_enriched_test_queries(served: tuple[InProcNode, Any, Path]) -> None:
    node, _, _ = served
    status = node.status()["services"]["shop"]["generations"]["v1"]
    assert status["customer"] == {"type": "lookup", "dataset": "customers", "rows": 6, "keys": ["customer_id"]}
    assert status["score"]["type"] == "prediction"


def test_custom_prediction_with_folder_and_function_reading_a_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    (folder / "code").mkdir(parents=True)
    (folder / "resources").mkdir()
    (folder / "empty").mkdir()
    (folder / "resources" / "weights.json").write_text(json.dumps({"amount": 0.01, "bias": -1.0}))
    (folder / "resources" / "table.pkl").write_bytes(__import__("pickle").dumps({"FR": "Paris", "DE": "Berlin"}))
    (folder / "code" / "custom.py").write_text(
        textwrap.dedent(
            """
            import json, math, os, pickle
            import pandas as pd

            CAPITALS = pickle.load(open(os.path.join(folders[0], "table.pkl"), "rb"))  # at import

            class Scorer:
                def __init__(self, folder):
                    self.w = json.load(open(os.path.join(folder, "weights.json")))

                def predict(self, df):
                    p = [1 / (1 + math.exp(-(self.w["bias"] + self.w["amount"] * a))) for a in df["amount"]]
                    labels = ["HIGH" if x > 0.5 else "LOW" for x in p]
                    return pd.Series(labels), pd.DataFrame({"HIGH": p, "LOW": [1 - x for x in p]})

            class Broken:
                def __init__(self, folder=None):
                    pass

                def predict(self, df):
                    return [1]  # one prediction, whatever the rows

            def capital(country):
                return {"capital": CAPITALS.get(country), "folders": [os.path.basename(f) for f in folders]}
            """
        )
    )
    (folder / "service.yaml").write_text(
        textwrap.dedent(
            """
            service: custom
            version: v1
            endpoints:
              scorer:
                type: custom-prediction
                file: code/custom.py
                class: Scorer
                features: {amount: float}
                folders: [resources]
                test_queries: [{features: {amount: 10}}]
              broken:
                type: custom-prediction
                file: code/custom.py
                class: Broken
                folders: [resources]
              capital:
                type: function
                file: code/custom.py
                function: capital
                folders: [resources, empty]
                test_queries: [{country: FR}]
            """
        )
    )
    pkg = compile_service(folder, tmp_path / "custom.apz", progress=False).out
    with run_node(tmp_path / "data", pkg) as node:
        client = dataikuapi.APINodeClient(node.http + "/", "custom")
        one = client.predict_record("scorer", {"amount": 250})
        expected = 1 / (1 + np.exp(-(-1.0 + 0.01 * 250)))
        assert one["result"]["prediction"] == "HIGH"
        assert one["result"]["probas"]["HIGH"] == pytest.approx(expected)
        many = client.predict_records("scorer", [{"features": {"amount": a}} for a in (0, 100, 300)])
        assert [r["prediction"] for r in many["results"]] == ["LOW", "LOW", "HIGH"]
        r = requests.post(node.url("custom", "scorer", "predict"), json={"features": {"amount": "lots"}})
        assert r.status_code == 400 and "amount" in r.json()["message"]
        r = requests.post(node.url("custom", "broken", "predict-multi"), json={"items": [{"features": {"a": 1}}] * 3})
        assert r.status_code == 500 and r.json()["errorType"] == "USER_CODE_ERROR"
        assert "1 predictions for 3 rows" in r.json()["message"]
        assert client.run_function("capital", country="DE")["response"] == {
            "capital": "Berlin",
            "folders": ["resources", "empty"],
        }
        with grpc.insecure_channel(node.grpc) as ch:
            out = pbg.ApiNodeStub(ch).Predict(
                pb.PredictRequest(service="custom", endpoint="scorer", features={"amount": pb.Value(integer=50)})
            )
        assert out.result.prediction.text == "LOW"
        assert out.result.probas["LOW"] == pytest.approx(1 - 1 / (1 + np.exp(-(-1.0 + 0.5))))


def test_enrichment_from_a_postgresql_table(tmp_path: Path, postgres: PgServer) -> None:
    postgres.execute("CREATE TABLE IF NOT EXISTS clients (id text, age int, tenure_days int)")
    postgres.execute("DELETE FROM clients")
    postgres.execute("INSERT INTO clients VALUES ('C1', 34, 1200), ('C3', 22, NULL), ('C4', 45, 800), ('C4', 46, 1)")
    folder = tmp_path / "svc"
    folder.mkdir()
    joblib.dump(model := _model(), folder / "model.joblib")
    (folder / "service.yaml").write_text(
        textwrap.dedent(
            """
            service: remote
            version: v1
            endpoints:
              score:
                type: prediction
                model: model.joblib
                features: {amount: float, age: int, tenure_days: {type: float, nullable: true}}
                enrich:
                  - table: clients
                    connection: crm
                    keys: {id: customer}
                    columns: [age, tenure_days]
                test_queries: [{features: {customer: C1, amount: 5.0}}]
            """
        )
    )
    pkg = compile_service(folder, tmp_path / "remote.apz", progress=False).out
    conns = tmp_path / "connections.json"
    conns.write_text(json.dumps({"crm": {"type": "postgresql", "dsn": postgres.dsn}}))
    with run_node(tmp_path / "data", pkg, args=["--connections", str(conns)]) as node:
        url = node.url("remote", "score", "predict")
        out = requests.post(url, json={"features": {"customer": "C1", "amount": 80.0}, "returnEnriched": True}).json()
        assert out["result"]["enrichedFeatures"] == {"customer": "C1", "amount": 80.0, "age": 34, "tenure_days": 1200}
        assert out["result"]["probas"]["HIGH"] == pytest.approx(_proba(model, 80.0, 34, 1200), abs=1e-6)
        # the database's value is read per request: a change shows at once
        postgres.execute("UPDATE clients SET age = 70 WHERE id = 'C1'")
        again = requests.post(url, json={"features": {"customer": "C1", "amount": 80.0}}).json()
        assert again["result"]["probas"]["HIGH"] == pytest.approx(_proba(model, 80.0, 70, 1200), abs=1e-6)
        multi = requests.post(
            node.url("remote", "score", "predict-multi"),
            json={"items": [{"features": {"customer": c, "amount": 10.0}} for c in ("C3", "nobody", "C4", "C1")]},
        ).json()["results"]
        assert [r.get("ignoreReason") for r in multi] == [None, "NO_LOOKUP_MATCH", "MULTIPLE_LOOKUP_MATCHES", None]
        assert multi[3]["probas"]["HIGH"] == pytest.approx(_proba(model, 10.0, 70, 1200), abs=1e-6)
        r = requests.post(url, json={"features": {"customer": ["C1"], "amount": 1.0}})
        assert r.status_code == 400 and "customer" in r.json()["message"]


EVENTS = """\
service: events
version: v1
datasets:
  events_pq: data/events.parquet
  events_csv: data/events.csv
endpoints:
  by_id_pq: {type: lookup, dataset: events_pq, keys: id}
  by_id_csv: {type: lookup, dataset: events_csv, keys: id}
  by_time: {type: lookup, dataset: events_pq, keys: ts}
  sql:
    type: sql
    database: bundled
    statements: SELECT ts FROM events_pq WHERE id = :id
    test_queries: [{id: 1}]
"""


def test_datetimes_are_clean_iso_strings_from_parquet_and_csv(tmp_path: Path) -> None:
    """`2019-03-04T10:00:00` as the README shows, from Parquet (whose timestamps carry a
    sub-second unit) as from CSV; a fraction only where a value has one; null for a hole."""
    folder = tmp_path / "svc"
    (folder / "data").mkdir(parents=True)
    times = pd.to_datetime(["2019-03-04 10:00:00", "2019-03-05 11:30:15.25", None], format="ISO8601")
    pd.DataFrame({"id": [1, 2, 3], "ts": times}).to_parquet(folder / "data" / "events.parquet")
    (folder / "data" / "events.csv").write_text("id,ts\n1,2019-03-04T10:00:00\n2,2019-03-05T11:30:15.25\n3,\n")
    (folder / "service.yaml").write_text(EVENTS)
    pkg = compile_service(folder, tmp_path / "events.apz", progress=False).out
    expected = ["2019-03-04T10:00:00", "2019-03-05T11:30:15.250000", None]
    with run_node(tmp_path / "data", pkg) as node:
        client = dataikuapi.APINodeClient(node.http, "events")
        for endpoint in ("by_id_pq", "by_id_csv"):
            got = [client.lookup_record(endpoint, {"id": i})["data"]["ts"] for i in (1, 2, 3)]
            assert got == expected, endpoint
        # the ISO string is also the key that finds the row
        assert client.lookup_record("by_time", {"ts": "2019-03-04T10:00:00"})["data"]["id"] == 1
        assert client.lookup_record("by_time", {"ts": "2019-03-05T11:30:15.250000"})["data"]["id"] == 2
        with grpc.insecure_channel(node.grpc) as ch:
            reply = pbg.ApiNodeStub(ch).Lookup(
                pb.LookupRequest(
                    service="events", endpoint="by_id_pq", items=[pb.LookupItem(data={"id": pb.Value(integer=1)})]
                )
            )
        assert reply.results[0].data["ts"].text == "2019-03-04T10:00:00"
        # the bundled SQLite table keeps SQLite's own form, which its datetime() compares with
        rows = client.sql_query("sql", {"id": 1})["rows"]
        assert rows == [["2019-03-04 10:00:00"]]
