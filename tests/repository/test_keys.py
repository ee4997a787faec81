"""Service API keys in a repository's desired state: `apinode deploy keys add|delete|list
--service S --repository DIR` changes the state (digests only, the new key printed once),
and every node of the repository converges to it at its next poll, without a restart; a
node started later never serves the service without its keys; keys survive a restart."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.deployer.conftest import deploy, make_package, ok
from tests.nginx import start_nginx
from tests.nodeproc import NodeProc, start_node
from tests.repository.helpers import KEY, Fleet, node_args, status, wait_ready

PKG_KEY = "the-package-s-own-service-key"


def _code(node: NodeProc, key: str | None, service: str = "svc") -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(node.url(service, "ver", "run"), json={}, headers=headers, timeout=30).status_code


def _until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not in {timeout} s: {what}"
        time.sleep(0.1)


def _everywhere(fleet: Fleet, key: str | None, code: int, service: str = "svc") -> None:
    _until(f"{service} answers {code} everywhere", lambda: all(_code(n, key, service) == code for n in fleet.nodes))


def _keys(repo: Path, *args: str) -> str:
    return ok(deploy("keys", *args, "--service", "svc", "--repository", repo)).stdout


def test_service_keys_travel_in_the_repository_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    fleet = Fleet(str(repo), repo, tmp_path / "pkgs")
    ok(deploy("publish", make_package(fleet.pkgdir, "v1", api_keys=[PKG_KEY]), "--repository", repo, "--activate"))
    try:
        for i in range(3):
            fleet.start(f"node{i}")
        for node in fleet.nodes:
            wait_ready(node)
            assert _code(node, PKG_KEY) == 200 and _code(node, None) == 401

        listed = json.loads(_keys(repo, "list", "--json"))
        assert listed["managed"] is False and listed["keys"] == []

        # Add: the key is printed once; the state keeps its digest, and the package's key
        # (copied into the state by the first add) stays valid.
        # --wait returns once every node serves the new state: the key works everywhere at once.
        nodes = ",".join(n.grpc for n in fleet.nodes)
        waited = _keys(repo, "add", "--id", "team", "--label", "Team A", "--wait", "--nodes", nodes, "--admin-key", KEY)
        team = next(line for line in waited.splitlines() if re.fullmatch("[0-9a-f]{64}", line))
        assert "3 nodes serve state" in waited
        state = (repo / "state.json").read_text()
        assert team not in state and hashlib.sha256(team.encode()).hexdigest() in state
        assert all(_code(n, team) == 200 for n in fleet.nodes)
        for node in fleet.nodes:
            assert _code(node, PKG_KEY) == 200 and _code(node, None) == 401 and _code(node, "nope") == 401
            assert team not in (node.data_dir / "config/services/svc/api_keys.json").read_text()
        listed = json.loads(_keys(repo, "list", "--json"))
        assert listed["managed"] is True
        assert [(k["id"], k["label"]) for k in listed["keys"]] == [("key0", ""), ("team", "Team A")]
        assert "sha256" not in json.dumps(listed) and team not in json.dumps(listed)

        # Revoke the package's key (--wait --json: one document, the revocation's and the nodes'),
        # then the new one: refused everywhere, the other stays.
        revoked = json.loads(_keys(repo, "delete", "key0", "--wait", "--nodes", nodes, "--admin-key", KEY, "--json"))
        assert revoked["deleted"] == "key0" and revoked["ok"] is True and len(revoked["nodes"]) == 3, revoked
        assert all(_code(n, PKG_KEY) == 401 for n in fleet.nodes)
        misplaced = deploy("keys", "delete", "key0", "--service", "svc", "--node", fleet.nodes[0].grpc, "--wait")
        assert misplaced.returncode == 2 and "--wait goes with --repository" in misplaced.stderr
        assert all(_code(n, team) == 200 for n in fleet.nodes)
        last = deploy("keys", "delete", "team", "--service", "svc", "--repository", repo)
        assert last.returncode == 1 and "a service without keys is public" in last.stderr
        other = json.loads(_keys(repo, "add", "--json"))["key"]
        _keys(repo, "delete", "team")
        _everywhere(fleet, team, 401)
        _everywhere(fleet, other, 200)
        assert all(_code(n, None) == 401 for n in fleet.nodes)

        # A restarted node keeps the state's keys, before and after it syncs again.
        node = fleet.nodes.pop(0)
        node.stop()
        node = start_node(node.data_dir, args=node_args(str(repo)))
        fleet.nodes.append(node)
        wait_ready(node)
        assert _code(node, other) == 200 and _code(node, team) == 401 and _code(node, PKG_KEY) == 401

        # A service published without keys, given one by the repository; its state also
        # tunes an endpoint the package lacks, so every sync of it fails after the push.
        # The keys still apply, on the running nodes and on a node started afterwards,
        # which never answers the service without a key (the keys land before the package).
        ok(deploy("publish", make_package(fleet.pkgdir, "v1", service="open"), "--repository", repo, "--activate"))
        _everywhere(fleet, None, 200, "open")
        ok(deploy("tune", "open", "nope", "ceil=2", "--repository", repo))
        r = ok(deploy("keys", "add", "--service", "open", "--repository", repo, "--json"))
        opener = json.loads(r.stdout)["key"]
        _everywhere(fleet, None, 401, "open")
        _everywhere(fleet, opener, 200, "open")
        late = start_node(tmp_path / "late", args=node_args(str(repo)))
        fleet.nodes.append(late)
        seen = set()
        deadline = time.monotonic() + 90
        while (code := _code(late, opener, "open")) != 200 or _code(late, "nope", "open") == 200:
            seen.add(code)
            assert time.monotonic() < deadline, f"the late node never served the open service: {seen}"
            time.sleep(0.05)
        assert _code(late, None, "open") == 401 and _code(late, "nope", "open") == 401
        _until(
            "the late node's sync fails",
            lambda: "no endpoint 'nope'" in (status(late)["repository"]["lastError"] or ""),
        )
        assert _code(late, None, "open") == 401
    finally:
        for node in fleet.nodes:
            node.stop()
    log = "".join(n.log() for n in fleet.nodes)
    assert team not in log and other not in log and opener not in log


def test_admin_keys_stay_per_node(tmp_path: Path) -> None:
    r = deploy("keys", "add", "--repository", tmp_path, "--admin-key", "x")
    assert r.returncode == 2 and "admin keys stay per node" in r.stderr


def test_keys_in_an_http_repository_copy_the_package_s_keys(tmp_path: Path) -> None:
    server = start_nginx()
    try:
        pkg = make_package(tmp_path / "pkgs", "v1", api_keys=[PKG_KEY])
        ok(deploy("publish", pkg, "--repository", server.url, "--activate"))
        args = ("--service", "svc", "--repository", server.url, "--json")
        added = json.loads(ok(deploy("keys", "add", *args, "--id", "ci", "--created-by", "ops")).stdout)
        assert added["id"] == "ci" and added["createdBy"] == "ops" and added["serial"] == 2
        state = json.loads((server.www / "state.json").read_text())
        keys = state["services"]["svc"]["api_keys"]
        assert [(k["id"], k["sha256"]) for k in keys] == [
            ("key0", hashlib.sha256(PKG_KEY.encode()).hexdigest()),
            ("ci", hashlib.sha256(added["key"].encode()).hexdigest()),
        ]
        again = deploy("keys", "add", *args, "--id", "ci")
        assert again.returncode == 1 and "already has a key 'ci'" in again.stderr
        missing = deploy("keys", "delete", "nope", *args)
        assert missing.returncode == 1 and "has no key 'nope'" in missing.stderr
        deleted = json.loads(ok(deploy("keys", "delete", "key0", *args)).stdout)
        assert [k["id"] for k in deleted["keys"]] == ["ci"] and deleted["serial"] == 3
    finally:
        server.stop()
