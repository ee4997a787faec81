"""Rollouts of a service with API keys (the key named in the infrastructure file or on the
command line), and the deployer against TLS and mutual-TLS nodes: each way of getting the
connection wrong gets its own one-line message (exit 3), never a traceback on either side."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployer.conftest import deploy, ok
from tests.deployer.kinds import kinds_package
from tests.node.test_tls import make_pki
from tests.nodeproc import NodeProc, run_node

KEY = "kinds-service-key-1"


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _nodes_done(r: Any) -> list[tuple[str, str, int, int]]:
    doc = json.loads(r.stdout)
    return [(n["node"], n["status"], n["tests_passed"], n["tests_total"]) for n in doc["nodes"]]


def test_rollout_of_a_keyed_service(tmp_path: Path) -> None:
    v1, v2, v3 = (kinds_package(tmp_path, version=v, api_keys=[KEY]) for v in ("v1", "v2", "v3"))
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(run_node(tmp_path / "a"))
        b = stack.enter_context(run_node(tmp_path / "b"))
        nodes = [
            {"name": "a", "grpc": a.grpc, "http": a.http, "admin_key": a.admin_key()},
            {"name": "b", "grpc": b.grpc, "admin_key": b.admin_key()},
        ]
        bare = _write(tmp_path / "bare.yaml", {"nodes": nodes})
        r = deploy("push", v1, "--infra", bare, "--json")  # no key: the test queries are refused
        assert r.returncode == 1, r.stderr
        assert "requires an API key" in r.stderr and "rollout stopped at node a" in r.stderr

        # The key from an environment variable named at the top level (all nodes), or one
        # node's own key.
        keyed = _write(
            tmp_path / "keyed.yaml",
            {"api_key_env": "KINDS_KEY", "nodes": [nodes[0], {**nodes[1], "api_key": KEY}]},
        )
        r = ok(deploy("push", v2, "--infra", keyed, "--json", env={"KINDS_KEY": KEY}))
        assert _nodes_done(r) == [("a", "ok", 3, 3), ("b", "ok", 3, 3)]
        r = deploy("push", v2, "--infra", keyed, "--json")
        assert r.returncode == 2 and "environment variable KINDS_KEY (api_key_env) is not set" in r.stderr

        # The key on the command line, for every node of a file without one.
        r = ok(deploy("push", v3, "--infra", bare, "--api-key", KEY, "--json"))
        assert _nodes_done(r) == [("a", "ok", 3, 3), ("b", "ok", 3, 3)]
        ok(deploy("test", v3, "--node", a.grpc, "--api-key", KEY))
        r = deploy("test", v3, "--node", a.grpc)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr


@pytest.fixture(scope="module")
def tls_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, NodeProc, NodeProc, NodeProc]]:
    tmp = tmp_path_factory.mktemp("tls")
    pki = tmp / "pki"
    pki.mkdir()
    make_pki(pki)
    pkg = kinds_package(tmp)
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(run_node(tmp / "plain", pkg))
        server = stack.enter_context(run_node(tmp / "tls", pkg, args=tls))
        mutual = stack.enter_context(run_node(tmp / "mtls", pkg, args=[*tls, "--tls-client-ca", str(pki / "ca.crt")]))
        yield pki, pkg, plain, server, mutual


def _fails(*args: str | Path) -> str:
    r = deploy("list", *args)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    return line


def test_tls_nodes_and_what_goes_wrong(tls_nodes: tuple[Path, Path, NodeProc, NodeProc, NodeProc]) -> None:
    pki, _, plain, server, mutual = tls_nodes
    ca = ["--tls-ca", str(pki / "ca.crt")]
    client = ["--tls-cert", str(pki / "client.crt"), "--tls-key", str(pki / "client.key")]
    assert "kinds" in ok(deploy("list", "--node", server.grpc, *ca, *server.admin_args())).stdout
    assert "kinds" in ok(deploy("list", "--node", mutual.grpc, *ca, *client, *mutual.admin_args())).stdout

    assert "serves TLS on this port, and this client spoke plaintext" in _fails("--node", server.grpc)
    assert "certificate is not trusted" in _fails("--node", server.grpc, "--tls")
    assert "serves plaintext gRPC, and this client spoke TLS" in _fails("--node", plain.grpc, *ca)
    assert "requires a client certificate (mutual TLS)" in _fails("--node", mutual.grpc, *ca)
    for node, tls in ((plain, []), (plain, ca), (server, ca)):  # the HTTP port by mistake
        assert f"127.0.0.1:{node.http_port} is not a gRPC port" in _fails("--node", f"127.0.0.1:{node.http_port}", *tls)
    assert "connection refused" in _fails("--node", "127.0.0.1:1")
    r = deploy("list", "--node", mutual.grpc, *ca, "--tls-cert", str(pki / "client.crt"))
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr
    assert "Traceback" not in plain.log(), plain.log()[-3000:]
    assert "malformed HTTP request from 127.0.0.1 answered 400" in plain.log()


def test_rollout_over_tls_nodes(tmp_path: Path, tls_nodes: tuple[Path, Path, NodeProc, NodeProc, NodeProc]) -> None:
    """Per-node TLS in the infrastructure file (paths relative to it): test queries over
    HTTPS on one node, over gRPC with a client certificate on the other."""
    pki, pkg, _, server, mutual = tls_nodes
    doc = {
        "tls_ca": "pki/ca.crt",
        "nodes": [
            {"name": "tls", "grpc": server.grpc, "http": f"https://127.0.0.1:{server.http_port}"},
            {"name": "mtls", "grpc": mutual.grpc, "tls_ca": "pki/ca.crt", "tls_cert": "pki/client.crt",
             "tls_key": "pki/client.key"},
        ],
    }  # fmt: skip
    for spec, node in zip(doc["nodes"], (server, mutual), strict=True):
        if node.admin_key():
            spec["admin_key"] = node.admin_key()
    infra = _write(pki.parent / "infra.yaml", doc)
    r = ok(deploy("push", pkg, "--infra", infra, "--json"))
    assert _nodes_done(r) == [("tls", "ok", 3, 3), ("mtls", "ok", 3, 3)]
    del doc["nodes"][1]["tls_cert"]
    r = deploy("push", pkg, "--infra", _write(pki.parent / "half.yaml", doc), "--json")
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr
