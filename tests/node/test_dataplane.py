"""The data plane's typed operations, in-process: no transport, no node subprocess.

A registry with real pools (real worker processes) is composed as node/server.py composes
it, packages are pushed through the admin plane, and the tests call `DataPlane.predict`,
`predict_multi`, `predict_rows`, `run`, `lookup`, `lookup_multi` directly, then read the
query log they wrote.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
import pytest_asyncio

from compiler.build import compile_service
from node import errors, ops
from node.admin import AdminPlane
from node.dataplane import DataPlane, Resolved
from node.http.codec import DataikuTestQueries
from node.querylog import QueryLog
from node.registry import Registry
from node.storage import Storage
from node.supervisor.supervisor import Supervisor
from tests.node.test_lookup import CUSTOMERS, _model
from tests.packages import function_package, logistic_package

pytestmark = pytest.mark.asyncio(loop_scope="module")

SHOP = """\
service: shop
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  customer:
    type: lookup
    dataset: customers
    keys: customer_id
  score:
    type: prediction
    model: model.joblib
    features: {amount: float, age: int, tenure_days: {type: float, nullable: true}}
    enrich:
      - dataset: customers
        keys: {customer_id: customer}
        columns: [age, tenure_days]
"""
ROW = {"amount": 1.0, "hour": 3, "distance": 0.5}
HTTP = ops.Caller(peer="127.0.0.1", protocol="http")
GRPC = ops.Caller(peer="ipv4:127.0.0.1:1", protocol="grpc")


@dataclass
class Plane:
    dp: DataPlane
    model: Any
    log_dir: Path
    logged: int = 0  # query log lines read so far

    async def log(self, n: int) -> list[dict[str, Any]]:
        """The next `n` lines of the query log (written by its own thread: waited for)."""
        deadline = time.monotonic() + 60
        while True:
            path = self.log_dir / "queries.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= self.logged + n or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        out = [json.loads(line) for line in lines[self.logged : self.logged + n]]
        self.logged += len(out)
        assert len(out) == n, out
        return out


def _shop(tmp: Path) -> Path:
    folder = tmp / "shop"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "customers.csv").write_text(CUSTOMERS)
    (folder / "service.yaml").write_text(SHOP)
    joblib.dump(_model(), folder / "model.joblib")
    return compile_service(folder, tmp / "shop.apz", progress=False).out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    tmp = tmp_path_factory.mktemp("dataplane")
    fraud, model = logistic_package(tmp)
    fn = function_package(tmp, {"add": {"function": "add"}}, service="fn")
    hashed = [function_package(tmp, {"add": {"function": "add"}}, service="hashed", version=v) for v in ("v1", "v2")]
    guarded = function_package(tmp, {"add": {"function": "add"}}, service="guarded", api_keys=["s3cret"])
    shop = _shop(tmp)
    sup = Supervisor()
    storage = Storage(tmp / "data")
    querylog = QueryLog(tmp / "qlog")
    registry = Registry(storage, sup)
    registry.querylog = querylog
    dp = DataPlane(registry, querylog=querylog)
    admin = AdminPlane(registry, dp, storage, DataikuTestQueries())
    await sup.start()
    await registry.start()
    try:
        await admin.seed([fraud, fn, guarded, shop, *hashed])
        mapping = {"mode": "hash", "entries": [{"generation": v, "proba": 0.5} for v in ("v1", "v2")]}
        await admin.set_mapping("hashed", mapping)
        yield Plane(dp, model, tmp / "qlog")
    finally:
        await admin.wait_retired()
        await registry.close()
        await sup.close()
        await asyncio.to_thread(querylog.close)


async def test_predict_answers_typed_and_logs_the_request(plane: Plane) -> None:
    req = ops.PredictRequest("fraud", "score", ROW, context={"user": "u1"})
    out = await plane.dp.predict(req, HTTP)
    p = out.prediction
    expected = plane.model.predict_proba([[1.0, 3, 0.5]])[0]
    assert p.prediction == plane.model.classes_[expected.argmax()]
    assert p.probas == pytest.approx(dict(zip(plane.model.classes_, expected, strict=True)))
    assert not p.ignored and p.enriched_features is None and out.enriched is None
    assert out.context == ops.ApiContext("fraud", "score", "v1")
    assert out.timing.total is not None and out.timing.total > 0 and out.timing.wait is not None
    (line,) = await plane.log(1)
    assert (line["verb"], line["protocol"], line["status"], line["generation"]) == ("predict", "http", "ok", "v1")
    assert line["features"] == ROW and line["context"] == {"user": "u1"} and line["peer"] == "127.0.0.1"
    assert line["result"] == {"prediction": p.prediction, "probas": p.probas, "ignored": False}
    assert list(line["timing"]) == ["preProcessing", "wait", "prediction", "postProcessing", "total"]


async def test_predict_multi_and_rows_as_columns_agree(plane: Plane) -> None:
    rows = [ROW, {"amount": -2.0, "hour": 20, "distance": 3.0}]
    items = [ops.PredictItem(rows[0]), ops.PredictItem(rows[1], context={"n": 1})]
    multi = await plane.dp.predict_multi(ops.PredictMultiRequest("fraud", "score", items), GRPC)
    single = [(await plane.dp.predict(ops.PredictRequest("fraud", "score", r), GRPC)).prediction for r in rows]
    assert [p.prediction for p in multi.predictions] == [p.prediction for p in single]
    # the same rows as columns (the Open Inference Protocol's tensors), on the resolved endpoint
    gen = plane.dp.registry.services["fraud"].loaded["v1"]
    resolved = _resolved(plane, gen)
    columns = ops.Columns(
        {"amount": np.array([1.0, -2.0]), "hour": np.array([3, 20]), "distance": np.array([0.5, 3])}, 2
    )
    out = await plane.dp.predict_rows(ops.PredictRowsRequest("fraud", "score", rows=columns), GRPC, resolved)
    assert [p.probas for p in out.predictions] == [p.probas for p in multi.predictions]
    empty = await plane.dp.predict_multi(ops.PredictMultiRequest("fraud", "score", []), GRPC)
    assert empty.predictions == []
    lines = await plane.log(5)
    assert [line["verb"] for line in lines] == ["predict-multi", "predict", "predict", "predict-multi", "predict-multi"]
    assert lines[0]["items"] == rows and lines[0]["itemContexts"] == [None, {"n": 1}]
    assert lines[3]["items"] == [
        {"amount": 1.0, "hour": 3, "distance": 0.5},
        {"amount": -2.0, "hour": 20, "distance": 3},
    ]
    assert lines[3]["results"] == [p.as_dict() for p in out.predictions]


def _resolved(plane: Plane, gen: Any) -> Resolved:
    return Resolved(gen, gen.endpoints["score"], None)


async def test_columns_refused_as_rows_are(plane: Plane) -> None:
    """A value a column check refuses is reported as the row path reports it."""
    gen = plane.dp.registry.services["fraud"].loaded["v1"]
    bad = ops.Columns({"amount": np.array([1.0, 2.0]), "hour": np.array([3.0, 2.5]), "distance": np.array([0, 0])}, 2)
    with pytest.raises(errors.BadRequest) as err:
        await plane.dp.predict_rows(ops.PredictRowsRequest("fraud", "score", rows=bad), GRPC, _resolved(plane, gen))
    assert err.value.message == "items[1]: feature 'hour' must be an integer (int), got 2.5"
    nan = ops.Columns({"amount": np.array([np.nan]), "hour": np.array([1]), "distance": np.array([0.0])}, 1)
    with pytest.raises(errors.BadRequest) as err:
        await plane.dp.predict_rows(ops.PredictRowsRequest("fraud", "score", rows=nan), GRPC, _resolved(plane, gen))
    assert err.value.message == "items[0]: feature 'amount' must be a finite number (float), got nan"
    missing = ops.Columns({"amount": np.array([1.0]), "hour": np.array([1])}, 1)
    with pytest.raises(errors.BadRequest, match="items\\[0\\]: feature 'distance' is missing"):
        await plane.dp.predict_rows(ops.PredictRowsRequest("fraud", "score", rows=missing), GRPC, _resolved(plane, gen))
    lines = await plane.log(3)
    assert [line["status"] for line in lines] == ["BAD_REQUEST"] * 3
    assert lines[0]["items"] == [
        {"amount": 1.0, "hour": 3.0, "distance": 0},
        {"amount": 2.0, "hour": 2.5, "distance": 0},
    ]


async def test_enrichment_ignored_rows_and_enriched_features(plane: Plane) -> None:
    items = [ops.PredictItem({"customer": "C1", "amount": 10.0}), ops.PredictItem({"customer": "C9", "amount": 10.0})]
    out = await plane.dp.predict_multi(ops.PredictMultiRequest("shop", "score", items, return_enriched=True), HTTP)
    first, second = out.predictions
    assert not first.ignored and first.prediction in ("HIGH", "LOW")
    assert first.enriched_features == {"customer": "C1", "amount": 10.0, "age": 34, "tenure_days": 1200.0}
    assert second.ignored and second.ignore_reason == "NO_LOOKUP_MATCH" and second.prediction is None
    assert second.as_dict() == {
        "ignored": True,
        "ignoreReason": "NO_LOOKUP_MATCH",
        "enrichedFeatures": {"customer": "C9", "amount": 10.0},
    }
    assert out.enriched == [first.enriched_features, second.enriched_features]
    assert out.timing.enrich is not None
    (line,) = await plane.log(1)
    assert line["enrichedItems"] == out.enriched and line["results"][1]["ignored"] is True


async def test_run_and_lookup(plane: Plane) -> None:
    out = await plane.dp.run(ops.RunRequest("fn", "add", {"a": 1, "b": 2}), HTTP)
    assert isinstance(out.response, bytes) and orjson.loads(out.response)["sum"] == 3
    assert out.timing.as_dict().keys() == {"wait", "execution"}
    one = await plane.dp.lookup(ops.LookupRequest("shop", "customer", [{"customer_id": "C1"}]), GRPC)
    assert one.results[0].data["age"] == 34 and one.results[0].as_dict().keys() == {"data"}
    two = await plane.dp.lookup(
        ops.LookupRequest("shop", "customer", [{"customer_id": "C4"}, {"customer_id": "X"}]), GRPC
    )
    assert two.results[0].matches == 2 and two.results[1].ignored
    multi_of_one = await plane.dp.lookup_multi(ops.LookupRequest("shop", "customer", [{"customer_id": "C2"}]), HTTP)
    assert multi_of_one.results[0].data["age"] == 61
    lines = await plane.log(4)
    assert [line["verb"] for line in lines] == ["run", "lookup", "lookup-multi", "lookup-multi"]
    assert lines[0]["arguments"] == {"a": 1, "b": 2} and lines[0]["response"]["sum"] == 3
    assert lines[1]["data"] == {"customer_id": "C1"} and lines[3]["data"] == [{"customer_id": "C2"}]
    assert lines[1]["results"] == [one.results[0].as_dict()] and list(lines[1]["timing"]) == ["lookup"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda dp: dp.predict(ops.PredictRequest("nope", "score", ROW), HTTP), errors.NotFound, "service 'nope'"),
        (lambda dp: dp.predict(ops.PredictRequest("fraud", "nope", ROW), HTTP), errors.NotFound, "no endpoint 'nope'"),
        (lambda dp: dp.run(ops.RunRequest("fraud", "score", {}), HTTP), errors.BadRequest, "not a function"),
        (lambda dp: dp.predict(ops.PredictRequest("fn", "add", ROW), HTTP), errors.BadRequest, "not a prediction"),
        (lambda dp: dp.lookup(ops.LookupRequest("fn", "add", [{}]), HTTP), errors.BadRequest, "not a lookup"),
        (lambda dp: dp.predict(ops.PredictRequest("fraud", "score"), HTTP), errors.BadRequest, "needs 'features'"),
        (
            lambda dp: dp.lookup(ops.LookupRequest("shop", "customer", [ops.MISSING]), HTTP),
            errors.BadRequest,
            "needs 'data'",
        ),
        (
            lambda dp: dp.run(ops.RunRequest("hashed", "add", {"a": 1}), HTTP),
            errors.DispatchKeyMissing,
            "the header X-Dispatch-Key",
        ),
        (
            lambda dp: dp.run(ops.RunRequest("hashed", "add", {"a": 1}), GRPC),
            errors.DispatchKeyMissing,
            "dispatch.dispatch_key",
        ),
        (
            lambda dp: dp.run(ops.RunRequest("fn", "add", {}, ops.Dispatch(forced_generation=["v1"])), HTTP),
            errors.BadRequest,
            "dispatch.forcedGeneration must be a string",
        ),
    ],
)
async def test_errors_are_counted_and_logged(plane: Plane, call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        await call(plane.dp)
    assert message in str(err.value)
    (line,) = await plane.log(1)
    assert line["status"] == errors.kind_of(err.value).error_type and message in line["error"]  # type: ignore[arg-type]


async def test_dispatch_key_and_api_keys(plane: Plane) -> None:
    picked = set()
    for key in ("a", "b", "c", "d", "e", "f"):
        out = await plane.dp.run(ops.RunRequest("hashed", "add", {"a": 1}, ops.Dispatch(dispatch_key=key)), HTTP)
        again = await plane.dp.run(ops.RunRequest("hashed", "add", {"a": 1}, ops.Dispatch(dispatch_key=key)), HTTP)
        assert out.context.service_generation == again.context.service_generation
        picked.add(out.context.service_generation)
    assert picked == {"v1", "v2"}
    await plane.log(12)
    with pytest.raises(errors.Unauthorized):
        await plane.dp.run(ops.RunRequest("guarded", "add", {"a": 1}), HTTP)
    out = await plane.dp.run(ops.RunRequest("guarded", "add", {"a": 1}), ops.Caller("s3cret", "10.0.0.1", "http"))
    assert orjson.loads(out.response)["sum"] == 2
    (line,) = await plane.log(1)  # a refused key is not logged
    assert line["apiKeyId"] == "key0" and line["peer"] == "10.0.0.1"
    text = plane.dp.metrics.render().decode()
    assert 'outcome="UNAUTHORIZED",protocol="http",service="guarded"' in text
