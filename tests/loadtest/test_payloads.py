"""Payload files, the body picker and the configuration parsers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from loadtest import ConfigError, LoadConfig, Target
from loadtest.config import parse_cpus, parse_duration, parse_latency, parse_steps
from loadtest.payloads import Picker, load_bodies, package_info

QUERIES = [{"features": {"amount": 1.5}}, {"features": {"amount": 900.0}}]


def make_package(path: Path, endpoints: dict[str, str] | None = None) -> Path:
    """A minimal .apz: manifest.json naming each endpoint's test queries."""
    endpoints = endpoints or {"score": "prediction"}
    manifest = {
        "format": "apinode-package",
        "format_version": 1,
        "service": "fraud",
        "version": "v1",
        "files": {},
        "endpoints": {eid: {"type": etype, "test_queries": f"tests/{eid}.json"} for eid, etype in endpoints.items()},
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for eid in endpoints:
            z.writestr(f"tests/{eid}.json", json.dumps(QUERIES))
    return path


def test_package_test_queries(tmp_path: Path) -> None:
    apz = make_package(tmp_path / "fraud.apz")
    assert load_bodies(apz) == QUERIES
    info = package_info(apz)
    assert (info.service, info.endpoint, info.verb) == ("fraud", "score", "predict")


def test_package_with_several_endpoints_needs_one_named(tmp_path: Path) -> None:
    apz = make_package(tmp_path / "p.apz", {"score": "prediction", "fn": "function"})
    with pytest.raises(ConfigError, match="pick one"):
        load_bodies(apz)
    assert load_bodies(apz, "fn") == QUERIES
    assert package_info(apz, "fn").verb == "run"
    with pytest.raises(ConfigError, match="no endpoint 'nope'"):
        load_bodies(apz, "nope")


def test_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "q.jsonl"
    p.write_text('{"features": {"a": 1}}\n\n{"x": [1, 2]}\n')
    assert load_bodies(p) == [{"features": {"a": 1}}, {"x": [1, 2]}]
    p.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ConfigError, match=r"q.jsonl:2"):
        load_bodies(p)


def test_csv_rows_become_features_with_numbers(tmp_path: Path) -> None:
    p = tmp_path / "rows.csv"
    p.write_text("amount,n,country,note\n12.5,3,FR,\n-1e3,0,nan,x\n")
    assert load_bodies(p) == [
        {"features": {"amount": 12.5, "n": 3, "country": "FR", "note": None}},
        {"features": {"amount": -1000.0, "n": 0, "country": "nan", "note": "x"}},
    ]


def test_unknown_or_missing_payload(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected a \.apz"):
        load_bodies(tmp_path / "q.txt")
    with pytest.raises(ConfigError, match="cannot read payload"):
        load_bodies(tmp_path / "missing.jsonl")


def test_picker_cycles_from_its_offset_or_samples() -> None:
    cyc = Picker(3, sample=False, seed=None, offset=1)
    assert [cyc.next() for _ in range(5)] == [1, 2, 0, 1, 2]
    a = Picker(10, sample=True, seed=42)
    b = Picker(10, sample=True, seed=42)
    seq = [a.next() for _ in range(50)]
    assert seq == [b.next() for _ in range(50)]
    assert len(set(seq)) > 3


def test_parsers() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("3") == 3.0
    assert parse_latency("5ms") == pytest.approx(0.005)
    assert parse_latency("5") == pytest.approx(0.005)
    assert parse_latency("250us") == pytest.approx(0.00025)
    assert parse_steps("1,4,16,64") == [1.0, 4.0, 16.0, 64.0]
    assert parse_cpus("0,2-4") == (0, 2, 3, 4)
    for bad in ("fast", "10 parsecs"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    with pytest.raises(ConfigError):
        parse_steps("1,-2")


def test_config_validation() -> None:
    ok = LoadConfig(target=Target(service="s", endpoint="e"))
    assert ok.validate() is ok
    assert ok.target.http_url() == "http://127.0.0.1:12000/public/api/v1/s/e/predict"
    with pytest.raises(ConfigError, match="--path, or --service"):
        LoadConfig(target=Target()).validate()
    with pytest.raises(ConfigError, match="duration or a number"):
        LoadConfig(target=Target(path="/x"), duration=None).validate()
    for verb in ("lookup", "lookup-multi", "query"):  # gRPC has Lookup and Query
        LoadConfig(target=Target(mode="grpc", service="s", endpoint="e", verb=verb)).validate()
    with pytest.raises(ConfigError, match="only streams predictions"):
        LoadConfig(target=Target(mode="grpc-stream", service="s", endpoint="e", verb="lookup")).validate()
    with pytest.raises(ConfigError, match="only streams predictions"):
        LoadConfig(target=Target(mode="grpc-stream", service="s", endpoint="e", verb="run")).validate()


def test_pinned_sets_and_restores_the_affinity() -> None:
    import os
    import threading

    from loadtest.runner import pinned

    seen: list[set[int]] = []

    def body() -> None:  # in a thread: the affinity of this thread only
        before = os.sched_getaffinity(0)
        cpu = min(before)
        with pinned((cpu,)):
            seen.append(os.sched_getaffinity(0))
        seen.append(os.sched_getaffinity(0) ^ before)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert len(seen[0]) == 1 and seen[1] == set()
