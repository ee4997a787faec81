"""service.yaml and packaging of lookup, enrichment, custom-prediction and folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from compiler import compile_service
from compiler.errors import CompileError
from tests.compiler.helpers import Package

BASE = """\
service: shop
version: v1
datasets:
  customers: data/customers.csv
endpoints:
"""


def service(tmp_path: Path, endpoints: str) -> Path:
    folder = tmp_path / "svc"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "code").mkdir(exist_ok=True)
    (folder / "assets" / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "assets" / "sub" / "blob.bin").write_bytes(b"\x00" * 1000)
    (folder / "data" / "customers.csv").write_text("id,age,name\n1,30,a\n2,,b\n")
    (folder / "code" / "m.py").write_text(
        "class Model:\n    def predict(self, df):\n        return df['x']\n\nclass NoPredict:\n    pass\n\ndef f():\n    return 1\n"
    )
    (folder / "service.yaml").write_text(BASE + textwrap.indent(textwrap.dedent(endpoints), "  "))
    return folder


def compile_error(tmp_path: Path, endpoints: str) -> str:
    with pytest.raises(CompileError) as info:
        compile_service(service(tmp_path, endpoints), tmp_path / "out.apz", progress=False)
    return str(info.value)


def test_lookup_custom_and_folders_compile(tmp_path: Path) -> None:
    folder = service(
        tmp_path,
        """
        who:
          type: lookup
          dataset: customers
          keys: id
          columns: [age]
          on_no_match: fail
          test_queries: [{data: {id: 1}}]
        model:
          type: custom-prediction
          file: code/m.py
          class: Model
          features: {x: float}
          folders: [assets]
        fn:
          type: function
          file: code/m.py
          function: f
          folders: [assets/sub, assets]
        """,
    )
    pkg = Package(compile_service(folder, tmp_path / "out.apz", progress=False).out)
    assert pkg.endpoint("who") == {
        "type": "lookup",
        "dataset": "customers",
        "keys": ["id"],
        "columns": ["age"],
        "on_no_match": "fail",
        "test_queries": "tests/who.json",
    }
    assert pkg.manifest["datasets"]["customers"]["schema"] == [
        {"name": "id", "type": "int"},
        {"name": "age", "type": "int"},  # a hole does not make it a float column
        {"name": "name", "type": "string"},
    ]
    model = pkg.endpoint("model")
    assert model["code"] == {"path": "code/m.py", "root": "code", "class": "Model"}
    assert model["features"] == [{"name": "x", "type": "float", "nullable": True}]
    assert model["folders"] == ["folders/assets"]
    assert pkg.endpoint("fn")["folders"] == ["folders/assets/sub", "folders/assets"]
    assert "folders/assets/sub/blob.bin" in pkg.manifest["files"]


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ("x: {type: lookup, dataset: nope, keys: id}", "endpoints.x.dataset: no dataset 'nope'"),
        ("x: {type: lookup, dataset: customers, keys: idd}", "dataset 'customers' has no column 'idd'"),
        ("x: {type: lookup, dataset: customers}", "a lookup endpoint needs 'keys:'"),
        (
            "x: {type: lookup, dataset: customers, keys: id, on_no_match: skip}",
            "on_no_match: must be one of null, fail",
        ),
        ("x: {type: lookup, dataset: customers, keys: id, pool: {}}", "unknown key 'pool'"),
        ("x: {type: custom-prediction, file: code/m.py, class: Nope}", "defines no top-level class 'Nope'"),
        ("x: {type: custom-prediction, file: code/m.py, class: NoPredict}", "has no predict(self, df) method"),
        ("x: {type: custom-prediction, file: code/m.py}", "needs 'class:'"),
        ("x: {type: function, file: code/m.py, function: f, folders: [missing]}", "not a folder"),
        ("x: {type: function, file: code/m.py, function: f, folders: [../..]}", "outside the service folder"),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, enrich: [{dataset: customers, keys: id}]}",
            "an enrichment needs 'columns:'",
        ),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, "
            "enrich: [{dataset: customers, keys: id, columns: [agee]}]}",
            "endpoints.x.enrich[0].columns: dataset 'customers' has no column 'agee'",
        ),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, "
            "enrich: [{dataset: customers, keys: id, columns: age, on_multiple: all}]}",
            "on_multiple: must be one of ignore, fail, first",
        ),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, "
            "enrich: [{dataset: customers, table: t, connection: crm, keys: id, columns: age}]}",
            "an enrichment needs one of 'dataset:' and 'table:'",
        ),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, enrich: [{table: t, keys: id, columns: age}]}",
            "an enrichment needs 'connection:'",
        ),
        (
            "x: {type: custom-prediction, file: code/m.py, class: Model, "
            "enrich: [{table: 't; drop', connection: crm, keys: id, columns: age}]}",
            "expected a table name",
        ),
    ],
)
def test_mistakes(tmp_path: Path, endpoints: str, expected: str) -> None:
    message = compile_error(tmp_path, endpoints)
    assert expected in message and "\n" not in message
