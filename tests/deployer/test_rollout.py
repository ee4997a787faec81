"""Rolling deployments (`push --infra`) over three real nodes: all good, a node that is
unreachable, a node whose test queries fail; `--rollback-on-failure` restores the nodes
already done."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.deployer.conftest import deploy, make_package, ok, served_version
from tests.inproc import InProcNode, run_node


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[InProcNode]]:
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(run_node(tmp_path / "a"))
        b = stack.enter_context(run_node(tmp_path / "b"))
        c = stack.enter_context(run_node(tmp_path / "c", args=["--admin-key", "key-of-c"]))
        yield [a, b, c]


def _infra(tmp_path: Path, nodes: list[InProcNode], *, unreachable_b: bool = False) -> Path:
    a, b, c = nodes
    doc = {
        "nodes": [
            {"name": "a", "grpc": a.grpc, "http": a.http, "admin_key": a.admin_key()},
            {"name": "b", "grpc": "127.0.0.1:1" if unreachable_b else b.grpc, "admin_key": b.admin_key()},
            {"name": "c", "grpc": c.grpc, "admin_key": "key-of-c"},
        ]
    }
    path = tmp_path / "infra.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _seed(nodes: list[InProcNode], package: Path) -> None:
    for n, key in zip(nodes, ("", "", "key-of-c"), strict=True):
        ok(deploy("push", package, "--node", n.grpc, "--activate", *(["--admin-key", key] if key else [])))


def test_rollout_over_three_nodes(tmp_path: Path, nodes: list[InProcNode], packages: dict[str, Path]) -> None:
    _seed(nodes, packages["v1"])
    infra = _infra(tmp_path, nodes)
    r = ok(deploy("push", packages["v2"], "--infra", infra, "--json"))
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["stopped_at"] is None
    assert [(n["node"], n["status"], n["generation"]) for n in doc["nodes"]] == [
        ("a", "ok", "v2"),
        ("b", "ok", "v2"),
        ("c", "ok", "v2"),
    ]
    assert all(n["tests_passed"] == n["tests_total"] == 2 for n in doc["nodes"])
    for n in nodes:
        assert served_version(n) == ("v2", "v2")
    # the human table
    r = ok(deploy("push", packages["v3"], "--infra", infra))
    assert "rollout of svc v3" in r.stdout and r.stdout.count(" ok ") >= 3
    assert "rolled out to 3 nodes" in r.stdout


def test_unreachable_node_stops_and_rolls_back(
    tmp_path: Path, nodes: list[InProcNode], packages: dict[str, Path]
) -> None:
    a = nodes[0]
    _seed(nodes, packages["v1"])
    infra = _infra(tmp_path, nodes, unreachable_b=True)
    r = deploy("push", packages["v2"], "--infra", infra, "--rollback-on-failure", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stopped_at"]["node"] == "b" and doc["stopped_at"]["step"] == "connect"
    assert [n["status"] for n in doc["nodes"]] == ["rolled back", "failed", "skipped"]
    assert "rollout stopped at node b" in r.stderr and "unreachable" in r.stderr
    for n in nodes:
        assert served_version(n) == ("v1", "v1")

    # a service new to the nodes: restoring node a means it stops answering again
    fresh = make_package(tmp_path / "fresh", "f1", service="fresh")
    r = deploy("push", fresh, "--infra", infra, "--rollback-on-failure", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["nodes"][0]["status"] == "rolled back" and "disabled" in doc["nodes"][0]["message"]
    assert requests.post(a.url("fresh", "ver", "run"), json={}, timeout=10).status_code == 404


def test_failing_node_stops_the_rollout(tmp_path: Path, nodes: list[InProcNode]) -> None:
    a, b, c = nodes
    pkgs = tmp_path / "pkgs"
    _seed(nodes, make_package(pkgs, "v1"))
    (b.data_dir / "FAIL_DEPLOY_TESTS").touch()  # v2 and v3 fail their test queries on b only
    v2 = make_package(pkgs, "v2", fail_if_marker=True)
    v3 = make_package(pkgs, "v3", fail_if_marker=True)
    infra = _infra(tmp_path, nodes)

    r = deploy("push", v2, "--infra", infra)
    assert r.returncode == 1
    assert "rollout stopped at node b" in r.stderr and "step push" in r.stderr
    assert "broken on purpose" in r.stderr
    assert "skipped" in r.stdout and "failed" in r.stdout
    assert served_version(a) == ("v2", "v2")  # no rollback asked: a keeps the new one
    assert served_version(b) == ("v1", "v1")
    assert served_version(c) == ("v1", "v1")

    r = deploy("push", v3, "--infra", infra, "--rollback-on-failure", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["stopped_at"]["node"] == "b" and doc["stopped_at"]["step"] == "push"
    assert [n["status"] for n in doc["nodes"]] == ["rolled back", "failed", "skipped"]
    assert served_version(a) == ("v2", "v2")  # back on what it served before this rollout
    assert served_version(b) == ("v1", "v1")
    assert served_version(c) == ("v1", "v1")


def test_bad_infra_files(tmp_path: Path, packages: dict[str, Path]) -> None:
    cases = {
        "notyaml.yaml": "nodes: [a, {",
        "nonodes.yaml": "hosts: []",
        "badgrpc.yaml": "nodes: [{name: a, grpc: nowhere}]",
        "unknown.yaml": "nodes: [{name: a, grpc: 'h:1', colour: red}]",
        "dupes.yaml": "nodes: [{name: a, grpc: 'h:1'}, {name: a, grpc: 'h:2'}]",
        "toplevel.yaml": "colour: red\nnodes: [{name: a, grpc: 'h:1'}]",
        "twokeys.yaml": "nodes: [{name: a, grpc: 'h:1', api_key: k, api_key_env: K}]",
        "tlsflag.yaml": "nodes: [{name: a, grpc: 'h:1', tls: maybe}]",
        "nocert.yaml": "nodes: [{name: a, grpc: 'h:1', tls_ca: missing.crt}]",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        r = deploy("push", packages["v1"], "--infra", path)
        assert r.returncode == 2, (name, r.stderr)
        assert str(path) in r.stderr and "Traceback" not in r.stderr
