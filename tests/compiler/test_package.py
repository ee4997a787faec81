"""The package the compiler writes: manifest keys, datasets, test queries, warnings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from apz.archive import read_manifest
from apz.vocab import sha256_bytes
from compiler import compile_service
from compiler.errors import CompileError
from tests.compiler.helpers import Package, write_service


def model_and_frame() -> tuple[Pipeline, pd.DataFrame]:
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {
            "amount": rng.normal(50, 20, 200),
            "kind": rng.choice(["a", "b"], 200).astype(object),
            "unused": rng.normal(size=200),
        }
    )
    y = np.where(df["amount"] > 50, 1, 0)
    pre = ColumnTransformer(
        [("n", StandardScaler(), ["amount"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["kind"])]
    )  # remainder="drop": the model never reads `unused`
    return Pipeline([("p", pre), ("m", LogisticRegression())]).fit(df, y), df


def test_manifest_datasets_and_generated_queries(tmp_path: Path) -> None:
    model, df = model_and_frame()
    folder = write_service(tmp_path / "svc", model, sample=df.head(40))
    (folder / "data").mkdir()
    df.to_csv(folder / "data" / "rows.csv", index=False)
    df.head(7).to_parquet(folder / "data" / "few.parquet")
    text = (folder / "service.yaml").read_text()
    (folder / "service.yaml").write_text(
        text.replace("endpoints:", "datasets:\n  rows: data/rows.csv\n  few: data/few.parquet\nendpoints:")
    )

    report = compile_service(folder, tmp_path / "out.apz", progress=False)

    manifest = Package(report.out).manifest
    assert set(manifest) == {
        "format",
        "format_version",
        "service",
        "version",
        "created_at",
        "compiler",
        "datasets",
        "endpoints",
        "files",
    }
    assert manifest["format"] == "apinode-package" and manifest["format_version"] == 1
    assert manifest["created_at"].endswith("Z")
    datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    assert manifest["compiler"]["apinode"] == "0.1.0"
    assert set(manifest["compiler"]["libraries"]) == {
        "scikit-learn",
        "skl2onnx",
        "onnx",
        "onnxruntime",
        "numpy",
    }
    schema = manifest["datasets"]["rows"].pop("schema")
    assert schema == [
        {"name": "amount", "type": "float"},
        {"name": "kind", "type": "string"},
        {"name": "unused", "type": manifest["datasets"]["few"]["schema"][2]["type"]},
    ]
    assert manifest["datasets"]["few"].pop("schema")[:2] == schema[:2]
    assert manifest["datasets"] == {
        "rows": {
            "path": "datasets/rows.csv",
            "format": "csv",
            "rows": 200,
            "columns": ["amount", "kind", "unused"],
        },
        "few": {
            "path": "datasets/few.parquet",
            "format": "parquet",
            "rows": 7,
            "columns": ["amount", "kind", "unused"],
        },
    }
    parsed = read_manifest(report.out)  # the node's own parser
    assert parsed.endpoints["score"].feature_names == ["amount", "kind"]
    pkg = Package(report.out)
    for name, meta in manifest["files"].items():
        assert sha256_bytes(pkg.members[name]) == meta["sha256"]
    assert report.manifest["endpoints"] == manifest["endpoints"]
    # no test_queries in service.yaml: the first sample rows become the package's examples
    queries = __import__("json").loads(pkg.members["tests/score.json"])
    assert len(queries) == 3 and set(queries[0]["features"]) == {"amount", "kind"}
    assert queries[0]["features"]["kind"] == df["kind"][0]


def test_no_rows_means_parity_not_checked_loudly(tmp_path: Path) -> None:
    model, _ = model_and_frame()
    folder = write_service(tmp_path / "svc", model)
    report = compile_service(folder, tmp_path / "out.apz", progress=False)
    assert report.manifest["endpoints"]["score"]["parity"] == {"rows": 0, "source": "none"}
    assert any("parity NOT checked" in w for w in report.warnings)
    assert "test_queries" not in report.manifest["endpoints"]["score"]


def test_declared_feature_the_model_ignores_is_left_out(tmp_path: Path) -> None:
    model, df = model_and_frame()
    features = {"amount": "float", "kind": "string", "unused": "float"}
    folder = write_service(tmp_path / "svc", model, features=features, sample=df)
    report = compile_service(folder, tmp_path / "out.apz", progress=False)
    names = [f["name"] for f in report.manifest["endpoints"]["score"]["features"]]
    assert names == ["amount", "kind"]
    assert any("the model ignores 'unused'" in w for w in report.warnings)


def test_sample_rows_with_nulls_the_node_refuses_are_skipped(tmp_path: Path) -> None:
    model, df = model_and_frame()
    df = df.head(50).copy()
    df.loc[:9, "amount"] = np.nan
    folder = write_service(tmp_path / "svc", model, sample=df)
    report = compile_service(folder, tmp_path / "out.apz", progress=False)
    assert report.parity["score"].rows == 40 and report.parity["score"].skipped == 10
    assert report.manifest["endpoints"]["score"]["parity"]["skipped_rows"] == 10
    assert any("skipped 10 rows" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"test_queries": [{"features": {"amount": "lots", "kind": "a"}}]},
            "endpoints.score.test_queries[0]: feature 'amount' must be a number (float), got the string 'lots'",
        ),
        (
            {"test_queries": [{"features": {"kind": "a"}}]},
            "endpoints.score.test_queries[0]: feature 'amount' is missing and the model cannot impute it",
        ),
        (
            {"features": {"amount": "float"}},
            "endpoints.score.features: the model reads 'kind', not listed",
        ),
    ],
)
def test_query_and_feature_mistakes(tmp_path: Path, kwargs: dict[str, object], expected: str) -> None:
    model, _ = model_and_frame()
    folder = write_service(tmp_path / "svc", model, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CompileError) as info:
        compile_service(folder, tmp_path / "out.apz", progress=False)
    assert expected in str(info.value)


def test_sample_must_hold_the_features(tmp_path: Path) -> None:
    model, df = model_and_frame()
    folder = write_service(tmp_path / "svc", model, sample=df.drop(columns=["kind"]))
    with pytest.raises(CompileError, match=r"sample.csv lacks the feature column\(s\) 'kind'"):
        compile_service(folder, tmp_path / "out.apz", progress=False)


def test_api_keys_are_packed_hashed_and_query_log_policy_kept(tmp_path: Path) -> None:
    import hashlib
    import json
    import zipfile

    import yaml

    from compiler import compile_service

    folder = tmp_path / "fn"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "f.py").write_text("def f(**kw):\n    return 1\n")
    doc = {
        "service": "keyed",
        "version": "v1",
        "api_keys": ["plain-key-123", {"id": "mobile", "key": "mobile-key-456"}],
        "query_log": {"sample_rate": 0.5, "exclude": ["card_number"]},
        "endpoints": {"f": {"type": "function", "file": "code/f.py", "function": "f"}},
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(doc))
    report = compile_service(folder, tmp_path / "k.apz", progress=False)
    raw = zipfile.ZipFile(report.out).read("manifest.json").decode()
    assert "plain-key-123" not in raw and "mobile-key-456" not in raw
    manifest = json.loads(raw)
    assert manifest["api_keys"] == [
        {"id": "key0", "sha256": hashlib.sha256(b"plain-key-123").hexdigest()},
        {"id": "mobile", "sha256": hashlib.sha256(b"mobile-key-456").hexdigest()},
    ]
    assert manifest["query_log"] == {"enabled": True, "sample_rate": 0.5, "exclude": ["card_number"]}
