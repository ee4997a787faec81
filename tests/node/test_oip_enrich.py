"""The Open Inference Protocol on endpoints that enrich: the bundled fraud example (its
`score` completes a customer from the `customers` dataset by `customer_id`), trained and
compiled afresh, on a live node, called with Triton's own `tritonclient.http` and
`tritonclient.grpc` and compared with the Dataiku-style API of the same node.

Besides `score` (`on_missing_key: fail`, `on_no_match: ignore`, the caller's values win),
the package has `lenient` (`on_missing_key: ignore`) and `strict` (`on_missing_key:
continue`, `override: true`): the same model behind the other policies.
"""

from __future__ import annotations

import copy
import os
import queue
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.grpc as tg
import tritonclient.http as th
import yaml
from tritonclient.utils import InferenceServerException

from apz.archive import read_manifest
from compiler import compile_service
from tests.inproc import InProcNode, run_node

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fraud"
FEATURES = [
    "amount",
    "merchant_category",
    "hour",
    "distance_from_home",
    "card_present",
    "age",
    "account_age_days",
    "country",
]
SENT = ["customer_id", "amount", "merchant_category", "hour", "distance_from_home", "card_present"]
ENRICHED = ["age", "account_age_days", "country"]
DATATYPES = {
    "customer_id": "BYTES",
    "amount": "FP64",
    "merchant_category": "BYTES",
    "hour": "INT64",
    "distance_from_home": "FP64",
    "card_present": "BOOL",
    "age": "INT64",
    "account_age_days": "INT64",
    "country": "BYTES",
}
_NUMPY = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}


@dataclass
class Fraud:
    node: InProcNode
    model: Any  # the example's fitted pipeline
    sample: pd.DataFrame  # held-out rows: customer_id and every feature (distance known)
    held_out: Path  # the example's data/sample.csv
    optional: list[str]  # features the model imputes (nullable) or enrichment fills, in order


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fraud]:
    tmp = tmp_path_factory.mktemp("oip-enrich")
    folder = tmp / "fraud"
    folder.mkdir()
    shutil.copy(EXAMPLE / "train.py", folder / "train.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(folder / "train.py")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    spec = yaml.safe_load((EXAMPLE / "service.yaml").read_text())
    del spec["endpoints"]["explain"]  # a function endpoint: one worker less
    score = spec["endpoints"]["score"]
    assert score["enrich"][0]["on_missing_key"] == "fail" and not score["enrich"][0].get("override")
    small = {"floor": 1, "cruise": 1, "ceil": 1}
    for name, policy in (("lenient", {"on_missing_key": "ignore"}), ("strict", {"on_missing_key": "continue"})):
        other = copy.deepcopy(score)
        other.pop("test_queries")
        other["pool"] = small
        other["enrich"][0].update(policy)
        if name == "strict":
            other["enrich"][0]["override"] = True
        spec["endpoints"][name] = other
    (folder / "service.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    pkg = compile_service(folder, tmp / "fraud.apz", progress=False).out
    nullable = {f.name for f in read_manifest(pkg).endpoints["score"].features if f.nullable}
    optional = [f for f in FEATURES if f in nullable or f in ENRICHED]
    held_out = folder / "data" / "sample.csv"
    sample = pd.read_csv(held_out)
    sample = sample[sample["distance_from_home"].notna()].head(12).reset_index(drop=True)
    with run_node(tmp / "data", pkg) as node:
        yield Fraud(node, joblib.load(folder / "model.joblib"), sample, held_out, optional)


def values(df: pd.DataFrame, name: str) -> np.ndarray[Any, Any]:
    datatype = DATATYPES[name]
    if datatype == "BYTES":
        return np.array([str(v).encode() for v in df[name]], dtype=object)
    return df[name].to_numpy().astype(_NUMPY[datatype])


def http_inputs(df: pd.DataFrame, names: list[str]) -> list[th.InferInput]:
    out = []
    for name in names:
        t = th.InferInput(name, [len(df)], DATATYPES[name])
        t.set_data_from_numpy(values(df, name))
        out.append(t)
    return out


def grpc_inputs(df: pd.DataFrame, names: list[str]) -> list[tg.InferInput]:
    out = []
    for name in names:
        t = tg.InferInput(name, [len(df), 1], DATATYPES[name])
        t.set_data_from_numpy(values(df, name).reshape(-1, 1))
        out.append(t)
    return out


def dataiku(f: Fraud, endpoint: str, df: pd.DataFrame, names: list[str]) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Labels and [N, 2] probabilities of the Dataiku-style predict-multi of the same features."""
    client = dataikuapi.APINodeClient(f.node.http + "/", "fraud")
    records = df[names].astype(object).to_dict("records")
    answer = client.predict_records(endpoint, [{"features": r} for r in records])["results"]
    assert not any(r["ignored"] for r in answer)
    return [r["prediction"] for r in answer], np.array([[r["probas"]["FRAUD"], r["probas"]["OK"]] for r in answer])


def labels(result: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]


def test_metadata_lists_what_a_caller_sends(fraud: Fraud) -> None:
    c = th.InferenceServerClient(fraud.node.http.removeprefix("http://"))
    meta = c.get_model_metadata("fraud.score")
    assert meta["inputs"] == [
        {"name": n, "datatype": DATATYPES[n], "shape": [-1, 1]} for n in ["customer_id", *FEATURES]
    ]
    assert meta["parameters"]["features"] == FEATURES
    # required: the key (what the model can neither impute nor have looked up: nothing else, since
    # the model's one-hot encoder ignores unknown categories, a null merchant_category included)
    assert "country" in fraud.optional and "merchant_category" in fraud.optional
    assert "customer_id" not in fraud.optional
    assert meta["parameters"]["optional_inputs"] == fraud.optional
    config = c.get_model_config("fraud.score")
    assert [i["name"] for i in config["input"] if i.get("optional")] == fraud.optional
    assert [i["dims"] for i in config["input"]] == [[1]] * 9 and config["input"][0]["data_type"] == "TYPE_STRING"
    # `ignore` refuses a row without key as surely as `fail`; `continue` predicts it unenriched
    assert c.get_model_metadata("fraud.lenient")["parameters"]["optional_inputs"] == fraud.optional
    assert c.get_model_metadata("fraud.strict")["parameters"]["optional_inputs"] == ["customer_id", *fraud.optional]

    g = tg.InferenceServerClient(fraud.node.grpc)
    gmeta = g.get_model_metadata("fraud.score")
    assert [(i.name, i.datatype, list(i.shape)) for i in gmeta.inputs] == [
        (n, DATATYPES[n], [-1, 1]) for n in ["customer_id", *FEATURES]
    ]
    gconfig = g.get_model_config("fraud.score").config
    assert [i.name for i in gconfig.input if i.optional] == fraud.optional


def test_http_per_feature_infer_equals_dataiku_predict(fraud: Fraud) -> None:
    df = fraud.sample
    c = th.InferenceServerClient(fraud.node.http.removeprefix("http://"))
    r = c.infer("fraud.score", http_inputs(df, SENT), request_id="e1")
    assert r.get_response()["id"] == "e1"
    want_labels, want_probas = dataiku(fraud, "score", df, SENT)
    assert labels(r) == want_labels == fraud.model.predict(df[FEATURES]).tolist()
    np.testing.assert_allclose(r.as_numpy("probabilities"), want_probas, atol=1e-9)
    np.testing.assert_allclose(r.as_numpy("probabilities"), fraud.model.predict_proba(df[FEATURES]), atol=1e-6)


def test_grpc_per_feature_infer_and_stream_equal_dataiku_predict(fraud: Fraud) -> None:
    df = fraud.sample
    want_labels, want_probas = dataiku(fraud, "score", df, SENT)
    c = tg.InferenceServerClient(fraud.node.grpc)
    r = c.infer("fraud.score", grpc_inputs(df, SENT))
    assert labels(r) == want_labels
    np.testing.assert_allclose(r.as_numpy("probabilities"), want_probas, atol=1e-9)

    results: queue.Queue[Any] = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer("fraud.score", grpc_inputs(df.head(3), SENT), request_id="s1")
        got, error = results.get(timeout=30)
    finally:
        c.stop_stream()
    assert error is None and labels(got) == want_labels[:3]


def test_sent_enriched_features_win_or_lose_by_override(fraud: Fraud) -> None:
    """`score` keeps the caller's values (override: false), `strict` replaces them with the
    customer's (override: true), as their Dataiku-style predict does."""
    df = fraud.sample.copy()
    countries = sorted(set(df["country"]))
    df["age"] = 99
    df["account_age_days"] = 1
    df["country"] = [countries[(countries.index(v) + 1) % len(countries)] for v in df["country"]]
    c = th.InferenceServerClient(fraud.node.http.removeprefix("http://"))
    everything = ["customer_id", *FEATURES]

    kept = c.infer("fraud.score", http_inputs(df, everything))
    want_labels, want_probas = dataiku(fraud, "score", df, everything)
    assert labels(kept) == want_labels
    np.testing.assert_allclose(kept.as_numpy("probabilities"), want_probas, atol=1e-9)
    np.testing.assert_allclose(kept.as_numpy("probabilities"), fraud.model.predict_proba(df[FEATURES]), atol=1e-6)
    enriched = fraud.model.predict_proba(fraud.sample[FEATURES])
    assert np.abs(kept.as_numpy("probabilities") - enriched).max() > 1e-3  # the caller's values were used

    replaced = c.infer("fraud.strict", http_inputs(df, everything))
    want_labels, want_probas = dataiku(fraud, "strict", df, everything)
    assert labels(replaced) == want_labels
    np.testing.assert_allclose(replaced.as_numpy("probabilities"), want_probas, atol=1e-9)
    np.testing.assert_allclose(replaced.as_numpy("probabilities"), enriched, atol=1e-6)


def oip_error(f: Fraud, model: str, body: dict[str, Any]) -> tuple[int, str]:
    r = requests.post(f"{f.node.http}/v2/models/{model}/infer", json=body, timeout=30)
    assert r.headers["Content-Type"].startswith("application/json") and set(r.json()) == {"error"}, r.text
    return r.status_code, r.json()["error"]


def json_body(df: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    inputs = []
    for name in names:
        data = [v.decode() for v in values(df, name)] if DATATYPES[name] == "BYTES" else values(df, name).tolist()
        inputs.append({"name": name, "datatype": DATATYPES[name], "shape": [len(df)], "data": data})
    return {"inputs": inputs}


def test_an_ignored_row_is_an_oip_error(fraud: Fraud) -> None:
    """An unknown customer is ignored by `on_no_match: ignore`; OIP has no per-row status,
    so the call fails, cleanly, on every transport."""
    df = fraud.sample.head(4).copy()
    df.loc[1, "customer_id"] = "C99999"
    for model in ("fraud.score", "fraud.lenient"):
        status, message = oip_error(fraud, model, json_body(df, SENT))
        assert status == 400 and "1 of 4 rows" in message and "row 1: NO_LOOKUP_MATCH" in message, message

    http = th.InferenceServerClient(fraud.node.http.removeprefix("http://"))
    with pytest.raises(InferenceServerException) as err:
        http.infer("fraud.score", http_inputs(df, SENT))
    assert err.value.status() == "400" and "NO_LOOKUP_MATCH" in err.value.message()

    g = tg.InferenceServerClient(fraud.node.grpc)
    with pytest.raises(InferenceServerException) as err:
        g.infer("fraud.score", grpc_inputs(df, SENT))
    assert err.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT) and "NO_LOOKUP_MATCH" in err.value.message()

    results: queue.Queue[Any] = queue.Queue()
    g.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        g.async_stream_infer("fraud.score", grpc_inputs(df, SENT), request_id="bad")
        g.async_stream_infer("fraud.score", grpc_inputs(df.drop(index=1), SENT), request_id="good")
        (r1, e1), (r2, e2) = results.get(timeout=30), results.get(timeout=30)
    finally:
        g.stop_stream()
    assert r1 is None and "row 1: NO_LOOKUP_MATCH" in e1.message()
    assert e2 is None and labels(r2) == fraud.model.predict(df.drop(index=1)[FEATURES]).tolist()

    stats = requests.get(f"{fraud.node.http}/v2/models/fraud.score/stats", timeout=10).json()["model_stats"]
    assert sum(s["inference_stats"]["success"]["count"] for s in stats) >= 1


def test_missing_key_and_the_matrix_form(fraud: Fraud) -> None:
    """The per-feature form needs the key; the [N, features] matrix holds no key, so it is not
    enriched: `fail` refuses it, `ignore` refuses its rows, `continue` predicts it as sent."""
    df = fraud.sample
    status, message = oip_error(fraud, "fraud.score", json_body(df, SENT[1:]))
    assert status == 400 and "input 'customer_id' is missing" in message
    matrix = {
        "inputs": [
            {
                "name": "input",
                "datatype": "BYTES",
                "shape": [len(df), len(FEATURES)],
                "data": [[str(v) for v in row] for row in df[FEATURES].itertuples(index=False)],
            }
        ]
    }
    status, message = oip_error(fraud, "fraud.score", matrix)
    assert status == 400 and "'customer_id' is missing or null" in message
    status, message = oip_error(fraud, "fraud.lenient", matrix)
    assert status == 400 and f"{len(df)} of {len(df)} rows" in message and "MISSING_LOOKUP_KEY" in message
    r = requests.post(f"{fraud.node.http}/v2/models/fraud.strict/infer", json=matrix, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["label"] == fraud.model.predict(df[FEATURES]).tolist()
    np.testing.assert_allclose(
        np.reshape(out["probabilities"], (-1, 2)), fraud.model.predict_proba(df[FEATURES]), atol=1e-6
    )


_BENCH_CHECK = """
import json, sys
import pandas as pd
from loadtest.bench_oip import infer_message, verify_infer
http, grpc_addr, sample = sys.argv[1:4]
frame = pd.read_csv(sample).drop(columns=["label"])
records = frame.astype(object).where(frame.notna(), None).to_dict("records")
rows = [0] + [i for i, r in enumerate(records) if r["distance_from_home"] is None][:1]
print(json.dumps([verify_infer(grpc_addr, infer_message(http, "fraud.score", records[i])) or "ok" for i in rows]))
"""


def test_the_bench_oip_request_succeeds(fraud: Fraud) -> None:
    """`make bench`'s OIP row sends a held-out row (customer_id and every feature, some
    nulls) as loadtest.bench_oip shapes it: the node answers it. In a subprocess: the
    bench imports the node's `inference` stubs, which tritonclient's cannot live beside."""
    run = subprocess.run(
        [sys.executable, "-c", _BENCH_CHECK, fraud.node.http, fraud.node.grpc, str(fraud.held_out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == '["ok", "ok"]', run.stdout
