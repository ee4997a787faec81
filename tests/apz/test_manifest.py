"""The typed manifest: every part an endpoint's reader uses is parsed once, into the
dataclasses of apz/specs.py, and a field of the wrong type is refused with its name."""

from __future__ import annotations

import copy
import hashlib
import pickle
from typing import Any

import pytest

from apz.manifest import parse_manifest, parse_query_log
from apz.specs import (
    ApiKeySpec,
    CodeSpec,
    ColumnSpec,
    EnrichmentSpec,
    ExplanationSpec,
    LookupSpec,
    QueryLogSpec,
)
from apz.vocab import PackageError
from node.worker.spec import WorkerSpec

SHA = hashlib.sha256(b"x").hexdigest()
FILES = [
    "datasets/customers.csv",
    "models/score.onnx",
    "models/score.background.json",
    "code/funcs.py",
    "code/custom.py",
    "sqlite/shop.db",
    "tests/score.json",
]


def full_manifest() -> dict[str, Any]:
    """A manifest with every kind of endpoint and every optional part."""
    return {
        "format": "apinode-package",
        "format_version": 1,
        "service": "shop",
        "version": "v1",
        "datasets": {
            "customers": {
                "path": "datasets/customers.csv",
                "format": "csv",
                "rows": 2,
                "columns": ["customer_id", "age"],
                "schema": [{"name": "customer_id", "type": "string"}, {"name": "age", "type": "int"}],
            }
        },
        "endpoints": {
            "score": {
                "type": "prediction",
                "task": "binary",
                "features": [
                    {"name": "amount", "type": "float", "onnx_type": "double", "nullable": False},
                    {"name": "age", "type": "int", "onnx_type": "double", "nullable": True},
                ],
                "classes": ["no", "yes"],
                "positive_class": "no",
                "model": {"path": "models/score.onnx", "input_mode": "matrix", "proba_output": "probabilities"},
                "explanations": {
                    "enabled": True,
                    "by_default": False,
                    "method": "ICE",
                    "n_explanations": 2,
                    "mc_steps": 10,
                    "max_mc_steps": 100,
                    "background": "models/score.background.json",
                },
                "enrich": [
                    {"dataset": "customers", "keys": {"customer_id": "cid"}, "columns": {"age": "age"}},
                    {
                        "table": "crm.customers",
                        "connection": "crm",
                        "keys": {"id": "cid"},
                        "columns": {"tier": "tier"},
                        "on_no_match": "fail",
                        "override": True,
                    },
                ],
                "test_queries": "tests/score.json",
                "pool": {"floor": 1, "ceil": 2},
            },
            "customer": {"type": "lookup", "dataset": "customers", "keys": ["customer_id"], "on_multiple": "fail"},
            "echo": {
                "type": "function",
                "code": {"path": "code/funcs.py", "root": "code", "function": "echo"},
                "folders": ["folders/res"],
            },
            "custom": {
                "type": "custom-prediction",
                "code": {"path": "code/custom.py", "root": "code", "class": "Model"},
                "features": [{"name": "x", "type": "string"}],
            },
            "recent": {
                "type": "sql",
                "database": "sqlite/shop.db",
                "statements": ["SELECT * FROM t WHERE a = :a AND b = :b", "SELECT :b, :c"],
            },
            "remote": {"type": "sql", "connection": "crm", "statements": ["SELECT 1"]},
        },
        "api_keys": [{"id": "team", "sha256": SHA}, {"sha256": SHA}],
        "query_log": {"sample_rate": 0.5, "exclude": ["card"]},
        "files": {name: {"sha256": SHA, "size": 1} for name in FILES},
    }


def test_every_part_is_typed() -> None:
    m = parse_manifest(full_manifest())
    assert m.datasets["customers"].schema == (ColumnSpec("customer_id", "string"), ColumnSpec("age", "int"))
    assert m.datasets["customers"].columns == ("customer_id", "age")
    assert m.files["code/funcs.py"].size == 1
    assert m.api_keys == (ApiKeySpec("team", SHA), ApiKeySpec("", SHA))
    assert m.query_log == QueryLogSpec(True, 0.5, frozenset({"card"}))

    score = m.endpoints["score"]
    assert score.positive == 0 and score.classes == ("no", "yes")
    assert score.explanations == ExplanationSpec(True, False, "ICE", 2, 10, 100, "models/score.background.json")
    assert score.enrich == (
        EnrichmentSpec(keys={"customer_id": "cid"}, columns={"age": "age"}, dataset="customers"),
        EnrichmentSpec(
            keys={"id": "cid"},
            columns={"tier": "tier"},
            table="crm.customers",
            connection="crm",
            on_no_match="fail",
            override=True,
        ),
    )
    # the defaults are the first of each policy's choices (apz.vocab)
    assert (score.enrich[0].on_missing_key, score.enrich[0].on_no_match, score.enrich[0].on_multiple) == (
        "fail",
        "ignore",
        "ignore",
    )
    assert score.enrich[1].source == "table 'crm.customers'"
    assert m.endpoints["customer"].lookup == LookupSpec("customers", ("customer_id",), None, "null", "fail")
    echo = m.endpoints["echo"]
    assert echo.code == CodeSpec("code/funcs.py", "code", "echo") and echo.folders == ("folders/res",)
    assert m.endpoints["custom"].code == CodeSpec("code/custom.py", "code", "Model")
    sql = m.endpoints["recent"].sql
    assert sql is not None and sql.database == "sqlite/shop.db" and sql.connection is None
    assert sql.parameters == ["a", "b", "c"]  # parsed once, in order of first use
    remote = m.endpoints["remote"].sql
    assert remote is not None and remote.connection == "crm" and remote.parameters == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("datasets", "customers", "columns"), "customer_id", "datasets.customers.columns must be a list"),
        (("datasets", "customers", "format"), "xlsx", "datasets.customers.format must be csv or parquet"),
        (("api_keys",), {"id": "x"}, "'api_keys' must be a list"),
        (("api_keys",), [{"id": 3, "sha256": SHA}], "api_keys[0] must be {id, sha256"),
        (("query_log",), [], "manifest.json: query_log must be an object"),
        (("query_log", "sample_rate"), 2, "query_log.sample_rate must be in [0, 1], got 2"),
        (("query_log", "exclude"), "card", "query_log.exclude must be a list of feature names"),
        (("endpoints", "score", "enrich"), {"dataset": "customers"}, "endpoints.score.enrich must be a list"),
        (("endpoints", "score", "enrich", 0, "keys"), ["customer_id"], "endpoints.score.enrich[0].keys must be"),
        (("endpoints", "score", "enrich", 0, "override"), "yes", "endpoints.score.enrich[0].override must be true"),
        (("endpoints", "score", "enrich", 1, "connection"), 7, "endpoints.score.enrich[1].connection 7 is not a name"),
        (("endpoints", "score", "explanations", "n_explanations"), "3", "endpoints.score.explanations.n_explanations"),
        (("endpoints", "customer", "keys"), "customer_id", "endpoints.customer.keys must be a non-empty list"),
        (("endpoints", "customer", "on_no_match"), "ignore", "endpoints.customer.on_no_match must be one of"),
        (("endpoints", "echo", "folders"), "folders/res", "endpoints.echo.folders must be a list of package paths"),
        (("endpoints", "echo", "code", "function"), 3, "endpoints.echo.code.function 3 is not a Python name"),
        (("endpoints", "recent", "statements"), "SELECT 1", "endpoints.recent.statements must be a non-empty list"),
        (("endpoints", "recent", "statements", 0), "SELECT 'open", "endpoints.recent.statements[0]: unterminated"),
        (("endpoints", "remote", "connection"), ["crm"], "endpoints.remote.connection ['crm'] is not a connection"),
    ],
)
def test_a_field_of_the_wrong_type_is_named(path: tuple[Any, ...], value: Any, expected: str) -> None:
    doc = full_manifest()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(PackageError, match=r"^manifest\.json: ") as info:
        parse_manifest(doc)
    assert expected in str(info.value)


def test_the_override_file_and_the_manifest_share_the_query_log_rule() -> None:
    with pytest.raises(ValueError, match=r"^/x/query_log.json: query_log.sample_rate must be in \[0, 1\]"):
        parse_query_log({"sample_rate": -1}, "/x/query_log.json")
    assert parse_query_log({}, "f") == QueryLogSpec()


def test_a_worker_spec_pickles_with_its_endpoint_and_hides_its_dsn() -> None:
    m = parse_manifest(full_manifest())
    for ep in m.endpoints.values():
        spec = WorkerSpec("/data/gen", ep, 2, "postgresql://u:secret@db/x")
        back = pickle.loads(pickle.dumps(spec, protocol=5))
        assert back == spec and back.endpoint == ep
        assert "secret" not in repr(spec)


def test_parsing_does_not_change_the_document() -> None:
    doc = full_manifest()
    before = copy.deepcopy(doc)
    parse_manifest(doc)
    assert doc == before
