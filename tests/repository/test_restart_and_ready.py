"""Restart semantics and honest readiness.

- Packages named on `serve`'s command line are stored and activated only when the node has
  no state for their service: a node restarted with its original command line after a
  later push serves the later generation (it used to re-activate the command line's).
- /ready (and gRPC health) is 503 until the node serves what it was told to serve; a node
  with nothing to serve is not ready unless started with --allow-empty.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from deployer.client import AdminClient
from tests.deployer.conftest import deploy, make_package, ok
from tests.inproc import run_node
from tests.nodeproc import APINODE
from tests.repository.helpers import KEY, served, status, wait_ready


def test_restart_with_the_original_command_line_keeps_what_was_pushed_later(tmp_path: Path) -> None:
    pk = {v: make_package(tmp_path / "pkgs", v) for v in ("v1", "v2", "v3")}
    data = tmp_path / "node"
    args = ["--admin-key", KEY]
    with run_node(data, pk["v1"], args=args) as node:
        assert served(node) == "v1"  # no state yet: the command line's package serves
        ok(deploy("push", pk["v2"], "--node", node.grpc, "--admin-key", KEY, "--activate"))
        assert served(node) == "v2"
    with run_node(data, pk["v1"], args=args) as node:  # the container restarts, same command
        assert served(node) == "v2"
        assert "not activated over it" in node.log()
    with run_node(data, pk["v3"], args=args) as node:  # a new command line does not override either
        assert served(node) == "v2"
        generations = status(node)["services"]["svc"]["generations"]
        assert sorted(generations) == ["v2"]


def test_a_repository_node_restarted_after_a_publish_serves_the_later_generation(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    pk = {v: make_package(tmp_path / "pkgs", v) for v in ("v1", "v2")}
    ok(deploy("publish", pk["v1"], "--repository", repo, "--activate"))
    args = ["--admin-key", KEY, "--repository", str(repo), "--poll-seconds", "0.3"]
    with run_node(tmp_path / "node", args=args) as node:
        wait_ready(node)
        assert served(node) == "v1"
    ok(deploy("publish", pk["v2"], "--repository", repo, "--activate"))  # while the node is down
    with run_node(tmp_path / "node", args=args) as node:  # its data dir says v1: ready only on v2
        wait_ready(node)
        assert served(node) == "v2"
        assert status(node)["repository"]["serial"] == 2


def _ready(http: str) -> tuple[int, list[str]]:
    r = requests.get(http + "/ready", timeout=10)
    return r.status_code, r.json()["notReady"]


def _health(grpc: str) -> str:
    with AdminClient(grpc, KEY, timeout=30) as client:
        return client.health()


def test_a_node_with_nothing_to_serve_is_not_ready_unless_allowed(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkgs", "v1")
    with run_node(tmp_path / "empty", args=["--admin-key", KEY]) as node:
        code, reasons = _ready(node.http)
        assert code == 503 and any("nothing to serve" in r for r in reasons), reasons
        assert _health(node.grpc) == "NOT_SERVING"
        ok(deploy("push", pkg, "--node", node.grpc, "--admin-key", KEY, "--activate"))
        assert _ready(node.http) == (200, [])
        node.wait_for(lambda: _health(node.grpc) == "SERVING", what="gRPC health SERVING")

    with run_node(tmp_path / "allowed", args=["--admin-key", KEY, "--allow-empty"]) as node:
        assert _ready(node.http) == (200, [])

    repo = tmp_path / "repo"
    repo.mkdir()  # an empty repository: no state.json yet
    repo_args = ["--admin-key", KEY, "--repository", str(repo), "--poll-seconds", "0.3"]
    with run_node(tmp_path / "repo-empty", args=repo_args) as node:
        node.wait_for(lambda: status(node)["repository"]["synced"], what="the first sync")
        code, reasons = _ready(node.http)
        assert code == 503 and any("nothing to serve" in r for r in reasons), reasons
        ok(deploy("publish", pkg, "--repository", repo, "--activate"))
        wait_ready(node)
        assert served(node) == "v1"
    with run_node(tmp_path / "repo-allowed", args=[*repo_args[:-2], "--allow-empty"]) as node:
        wait_ready(node)
        assert served(node) == "v1"  # the repository was not empty any more
    (repo / "state.json").unlink()
    with run_node(tmp_path / "repo-empty-allowed", args=[*repo_args, "--allow-empty"]) as node:
        wait_ready(node)


def test_a_repository_that_cannot_be_read_keeps_the_node_unready(tmp_path: Path) -> None:
    args = ["--admin-key", KEY, "--repository", "http://127.0.0.1:9/", "--poll-seconds", "0.3", "--allow-empty"]
    with run_node(tmp_path / "node", args=args) as node:
        node.wait_for(lambda: status(node)["repository"]["lastError"] is not None, what="a failed poll")
        code, reasons = _ready(node.http)
        assert code == 503 and any("not synced yet" in r and "127.0.0.1:9" in r for r in reasons), reasons
        assert "repository sync failed" in node.log()


def test_serve_refuses_packages_with_a_repository(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkgs", "v1")
    for extra, message in (
        ([str(pkg), "--repository", str(tmp_path)], "exclude each other"),
        (["--repository", str(tmp_path), "--poll-seconds", "0"], "--poll-seconds must be positive"),
        (["--repository", "http://localhost:99999/"], "is not a valid URL: Port out of range"),
        (["--repository", "https://u:secret@:80/"], "is not a valid URL"),
    ):
        r = subprocess.run(
            [APINODE, "serve", "--data-dir", str(tmp_path / "d"), *extra], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "secret" not in r.stderr and "Traceback" not in r.stderr, r.stderr
