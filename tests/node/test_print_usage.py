"""`apinode serve --print-usage`: every printed call works as pasted, keyed services included.

The curl lines run in a shell with the services' keys in the environment variables the
usage names; the grpcurl lines (grpcurl is not installed here) are played by parsing their
`-d` body into the method's request message, as grpcurl does, and calling it with their
`-H` metadata over a real channel.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import grpc
import joblib
import numpy as np
from google.protobuf import json_format
from sklearn.linear_model import LogisticRegression

from compiler.build import compile_service
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import run_node
from tests.packages import function_package, logistic_package

KEYS = {"FRAUD_API_KEY": "fraud-key-1", "ALPHA_API_KEY": "alpha-key-2", "SHOP_API_KEY": "shop-key-3"}
SHOP = """\
service: shop
version: v1
api_keys: [shop-key-3]
datasets:
  customers: data/customers.csv
endpoints:
  customer:
    type: lookup
    dataset: customers
    keys: customer_id
    test_queries: [{data: {customer_id: C1}}]
  ages:
    type: sql
    database: bundled
    statements: SELECT age FROM customers WHERE customer_id = :customer_id
    test_queries: [{customer_id: C2}]
  score:
    type: prediction
    model: model.joblib
    features: {amount: float, age: int}
    enrich:
      - dataset: customers
        keys: {customer_id: customer_id}
        columns: [age]
    test_queries: [{features: {customer_id: C1, amount: 10.0}}]
"""
REQUESTS = {
    "Predict": pb.PredictRequest,
    "Run": pb.RunRequest,
    "Lookup": pb.LookupRequest,
    "Query": pb.QueryRequest,
}


def shop_package(tmp: Path) -> Path:
    folder = tmp / "shop"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "customers.csv").write_text("customer_id,age\nC1,34\nC2,61\n")
    (folder / "service.yaml").write_text(SHOP)
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(50, 20, 200), rng.integers(18, 80, 200)])
    import pandas as pd

    model = LogisticRegression().fit(pd.DataFrame(x, columns=["amount", "age"]), x[:, 0] > 50)
    joblib.dump(model, folder / "model.joblib")
    return compile_service(folder, tmp / "shop.apz", progress=False).out


def test_printed_calls_work_as_pasted(tmp_path: Path) -> None:
    fraud, _ = logistic_package(tmp_path)
    alpha = function_package(tmp_path, {"e": {"function": "pid"}}, service="alpha", api_keys=[KEYS["ALPHA_API_KEY"]])
    public = function_package(tmp_path, {"e": {"function": "pid"}}, service="public")
    keys = tmp_path / "data" / "config" / "services" / "fraud" / "api_keys.json"
    keys.parent.mkdir(parents=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "ops", "key": KEYS["FRAUD_API_KEY"]}]}))
    with run_node(tmp_path / "data", fraud, alpha, public, shop_package(tmp_path), args=["--print-usage"]) as node:
        node.wait_for(lambda: "Ctrl-C stops the node." in node.log(), what="the usage")
        lines = [line.strip() for line in node.log().splitlines()]
        curls = [line for line in lines if line.startswith("curl ") and "/public/api/v1/" in line]
        grpcurls = [line for line in lines if line.startswith("grpcurl ")]
        verbs = sorted(c.split("/public/api/v1/")[1].split()[0] for c in curls)
        assert verbs == [
            "alpha/e/run",
            "fraud/score/predict",
            "public/e/run",
            "shop/ages/query",
            "shop/customer/lookup",
            "shop/score/predict",
        ]
        assert len(grpcurls) == len(curls)
        env = {**os.environ, **KEYS}
        for line in curls:
            out = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
            doc = json.loads(out.stdout)
            assert "errorType" not in doc and "apiContext" in doc, (line, doc)
            if "Authorization" in line:  # a keyed service: without its key the same call is refused
                bare = {k: v for k, v in env.items() if k not in KEYS}
                out = subprocess.run(["bash", "-c", line], env=bare, capture_output=True, text=True, timeout=60)
                assert json.loads(out.stdout)["errorType"] == "UNAUTHORIZED", line
        assert sum("Authorization: Bearer $" in c for c in curls) == 5  # all but the public service
        with grpc.insecure_channel(node.grpc) as ch:
            stub = pbg.ApiNodeStub(ch)
            for line in grpcurls:
                argv = shlex.split(line)
                method = argv[-1].rsplit("/", 1)[1]
                body = json_format.ParseDict(json.loads(argv[argv.index("-d") + 1]), REQUESTS[method]())
                metadata = []
                if "-H" in argv:  # `authorization: Bearer $VAR`, as the shell would expand it
                    name, _, value = argv[argv.index("-H") + 1].partition(": ")
                    var = value.split("$", 1)[1]
                    metadata.append((name, value.replace(f"${var}", KEYS[var])))
                reply = getattr(stub, method)(body, metadata=metadata, timeout=30)
                assert reply.api_context.service_id == body.service, line
