"""`GET /public/api/v1/{service}/swagger`: the OpenAPI document of the fraud example on a
live node validates, describes every endpoint and verb from the manifest, and schemathesis
(run as its CLI) finds no 5xx and no answer outside the document, for the public service
and once it has keys."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from tests.inproc import InProcNode, run_node
from tests.node.fraudpkg import build_fraud

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcNode]:
    tmp = tmp_path_factory.mktemp("openapi")
    with run_node(tmp / "data", build_fraud(tmp)) as n:
        yield n


def _swagger(node: InProcNode, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = requests.get(node.http + "/public/api/v1/fraud/swagger", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _schemathesis(node: InProcNode, *extra: str, service: str = "fraud") -> None:
    # Bounded: a few examples per operation keeps the run well under a minute on a busy machine.
    base = f"{node.http}/public/api/v1/{service}"
    cmd = [SCHEMATHESIS, "run", base + "/swagger", "--url", base]
    cmd += ["-c", CHECKS, "--max-examples", "15", "--phases", "examples,coverage,fuzzing", "-w", "1", "--no-color"]
    cmd += ["--seed", "1", *extra]
    # cwd: schemathesis writes a .schemathesis folder where it runs
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=node.data_dir.parent)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout, run.stdout[-3000:]


def test_the_document_validates_and_lists_every_endpoint_and_verb(node: InProcNode) -> None:
    doc = _swagger(node)
    validate(doc)
    assert doc["openapi"].startswith("3.") and doc["info"]["version"] == "v1"
    assert sorted(doc["paths"]) == [
        "/customer/lookup",
        "/customer/lookup-multi",
        "/explain/run",
        "/score/predict",
        "/score/predict-multi",
        "/score/predict-simple",
    ]
    simple = {p["name"]: p for p in doc["paths"]["/score/predict-simple"]["get"]["parameters"]}
    assert simple["customer_id"]["required"] and not simple["amount"]["required"]
    assert simple["hour"]["schema"] == {"type": "integer"}
    predict = doc["paths"]["/score/predict"]["post"]
    features = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["features"]["properties"]
    assert features["amount"]["type"] == "number" and features["hour"]["type"] == "integer"
    # nullable: the model's one-hot encoder ignores unknown categories, a null one included
    assert features["merchant_category"] == {"type": "string", "nullable": True}
    assert features["distance_from_home"] == {"type": "number", "nullable": True}
    required = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["features"]["required"]
    assert required == ["customer_id"]  # on_missing_key fail
    assert features["card_present"]["type"] == "boolean"
    assert features["customer_id"]["type"] == "string"  # the enrichment key, typed by its dataset column
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) == 4 and examples["test0"]["value"]["features"]["customer_id"] == "C00000"
    lookup = doc["paths"]["/customer/lookup"]["post"]["requestBody"]["content"]["application/json"]
    assert lookup["schema"]["properties"]["data"]["properties"] == {"customer_id": {"type": "string"}}
    assert lookup["schema"]["properties"]["data"]["required"] == ["customer_id"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["errorType", "message"]
    assert "security" not in doc  # a public service
    # The servers entry is a path: the docs page's try-it form calls the node that served it.
    assert doc["servers"] == [{"url": "/public/api/v1/fraud"}]


def test_an_unknown_service_is_a_404_in_the_api_format(node: InProcNode) -> None:
    for page in ("swagger", "docs"):
        r = requests.get(node.http + f"/public/api/v1/nope/{page}", timeout=30)
        assert r.status_code == 404 and r.json()["errorType"] == "NOT_FOUND", r.text


def test_schemathesis_finds_nothing_on_the_public_service(node: InProcNode) -> None:
    _schemathesis(node)


def test_schemathesis_finds_nothing_on_a_keyed_service(node: InProcNode) -> None:
    keys = node.data_dir / "config" / "services" / "fraud" / "api_keys.json"
    keys.parent.mkdir(parents=True, exist_ok=True)
    keys.write_text(json.dumps({"api_keys": [{"id": "fuzz", "key": "fuzz-key-1"}]}))
    try:
        url = node.url("fraud", "customer", "lookup")
        node.wait_for(lambda: requests.post(url, json={"data": {}}, timeout=10).status_code == 401, what="keys")
        for headers in ({}, {"Authorization": "Bearer wrong"}):  # it names the model's features
            r = requests.get(node.http + "/public/api/v1/fraud/swagger", headers=headers, timeout=30)
            assert r.status_code == 401 and r.json()["errorType"] == "UNAUTHORIZED", r.text
            assert "customer_id" not in r.text
        page = requests.get(node.http + "/public/api/v1/fraud/docs", timeout=30)
        assert page.status_code == 200 and "requires an API key" in page.text
        doc = _swagger(node, "fuzz-key-1")
        validate(doc)
        assert doc["security"] == [{"apiKey": []}, {"bearer": []}]
        assert doc["components"]["securitySchemes"]["apiKey"] == {
            "type": "http",
            "scheme": "basic",
            "description": "the API key as user name, empty password",
        }
        _schemathesis(node, "-H", "Authorization: Bearer fuzz-key-1")
    finally:
        keys.unlink()


SQL_SERVICE = """\
service: ledger
version: v1
datasets:
  customers: data/customers.csv
endpoints:
  by_age:
    type: sql
    database: bundled
    statements:
      - SELECT customer_id, age FROM customers WHERE age >= :min_age AND country = :country
    test_queries: [{min_age: 30, country: FR}]
"""


def test_sql_parameters_are_the_request_schema_and_schemathesis_finds_nothing(tmp_path: Path) -> None:
    from compiler.build import compile_service

    folder = tmp_path / "ledger"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "customers.csv").write_text("customer_id,age,country\nC1,34,FR\nC2,51,ES\nC3,29,FR\n")
    (folder / "service.yaml").write_text(SQL_SERVICE)
    pkg = compile_service(folder, tmp_path / "ledger.apz", progress=False).out
    with run_node(tmp_path / "data", pkg) as sql_node:
        r = requests.get(sql_node.http + "/public/api/v1/ledger/swagger", timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        validate(doc)
        body = doc["paths"]["/by_age/query"]["post"]["requestBody"]["content"]["application/json"]
        assert sorted(body["schema"]["properties"]) == ["country", "min_age"]
        assert body["schema"]["required"] == ["min_age", "country"]
        assert body["examples"]["test0"]["value"] == {"min_age": 30, "country": "FR"}
        _schemathesis(sql_node, service="ledger")
