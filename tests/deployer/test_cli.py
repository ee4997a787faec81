"""`apinode deploy` through the real CLI against a real node: operations, --json, exit codes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import requests

from tests.deployer.conftest import deploy, deploy_json, make_package, ok, served_version
from tests.nodeproc import NodeProc, run_node


def test_push_activate_rollback(node: NodeProc, packages: dict[str, Path]) -> None:
    g = node.grpc
    pushed = deploy_json("push", packages["v1"], "--node", g, "--activate")
    assert pushed["generation"] == "v1" and pushed["new"] and pushed["activated"]
    assert [t["ok"] for t in pushed["tests"]] == [True, True]
    assert pushed["tests"][0]["response"]["response"]["version"] == "v1"
    assert served_version(node) == ("v1", "v1")

    pushed = deploy_json("push", packages["v2"], "--node", g)  # stored, not serving
    assert pushed["generation"] == "v2" and not pushed["activated"]
    assert served_version(node) == ("v1", "v1")

    state = deploy_json("activate", "svc", "v2", "--node", g)
    assert state["mapping"]["entries"] == [{"generation": "v2", "proba": 1.0}]
    assert served_version(node) == ("v2", "v2")

    ok(deploy("push", packages["v3"], "--node", g, "--activate"))
    assert served_version(node) == ("v3", "v3")

    state = deploy_json("rollback", "svc", "--node", g)
    assert [e["generation"] for e in state["mapping"]["entries"]] == ["v2"]
    assert served_version(node) == ("v2", "v2")
    ok(deploy("rollback", "svc", "--node", g))
    assert served_version(node) == ("v1", "v1")

    listing = deploy_json("list", "--node", g)
    (svc,) = listing["services"]
    gens = {x["generation"]: x for x in svc["generations"]}
    assert set(gens) == {"v1", "v2", "v3"}
    assert gens["v1"]["active"] and gens["v1"]["share"] == 1.0 and gens["v1"]["loaded"]
    assert not gens["v3"]["active"]

    human = ok(deploy("list", "--node", g)).stdout
    assert "v1" in human and "v3" in human and "100%" in human


def test_status_tune_enable_delete(node: NodeProc, packages: dict[str, Path]) -> None:
    g = node.grpc
    ok(deploy("push", packages["v1"], "--node", g, "--activate"))
    ok(deploy("push", packages["v2"], "--node", g))
    served_version(node)

    status = deploy_json("status", "--node", g)
    assert status["ready"] is True
    (ep,) = status["endpoints"]
    assert (ep["service"], ep["endpoint"], ep["generation"], ep["ready"]) == ("svc", "ver", "v1", True)
    assert ep["served"] >= 1
    table = ok(deploy("status", "--node", g)).stdout
    assert "svc/ver @ v1" in table and "restarts" in table

    tuning = deploy_json("tune", "svc", "ver", "--node", g)
    assert tuning["pool"]["floor"] == 1
    tuning = deploy_json("tune", "svc", "ver", "floor=2", "ceil=3", "--node", g)
    assert (tuning["pool"]["floor"], tuning["pool"]["ceil"]) == (2, 3)
    node.wait_for(lambda: node.pool("svc", "ver")["workers"]["idle"] >= 2, what="a second worker")
    bad = deploy("tune", "svc", "ver", "floor=lots", "--node", g)
    assert bad.returncode == 2 and "floor" in bad.stderr

    ok(deploy("disable", "svc", "--node", g))
    assert requests.post(node.url("svc", "ver", "run"), json={}, timeout=10).status_code == 404
    state = deploy_json("enable", "svc", "--node", g)
    assert state["enabled"] is True
    assert served_version(node) == ("v1", "v1")

    serving = deploy("delete", "svc", "v1", "--node", g)
    assert serving.returncode == 1 and "FAILED_PRECONDITION" in serving.stderr
    state = deploy_json("delete", "svc", "v2", "--node", g)
    assert [x["generation"] for x in state["generations"]] == ["v1"]
    assert deploy_json("delete", "svc", "--node", g) == {"service": "svc", "deleted": True}
    assert deploy_json("list", "--node", g)["services"] == []


def test_test_command(node: NodeProc, packages: dict[str, Path], tmp_path: Path) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    out = deploy_json("test", packages["v1"], "--node", node.grpc)
    assert out["ok"] is True and len(out["results"]) == 2
    assert {r["generation"] for r in out["results"]} == {"v1"}
    assert out["results"][0]["response"]["response"] == {
        "version": "v1",
        "pid": out["results"][0]["response"]["response"]["pid"],
        "args": {"x": 1},
    }

    over_http = deploy_json("test", packages["v1"], "--node", node.grpc, "--http", node.http)
    assert over_http["ok"] is True and {r["generation"] for r in over_http["results"]} == {"v1"}

    human = ok(deploy("test", packages["v1"], "--node", node.grpc)).stdout
    assert "all passed" in human

    # Queries the served generation fails: exit 1, the failing query named on stderr.
    failing = make_package(tmp_path / "f", "v1", tests=[{"x": 1}, {"fail": True}])
    for extra in ([], ["--http", node.http]):
        r = deploy("test", failing, "--node", node.grpc, *extra)
        assert r.returncode == 1, r.stderr
        assert "test query #1 of ver failed" in r.stderr and "broken on purpose" in r.stderr
        assert "Traceback" not in r.stderr


def test_large_package_in_chunks(node: NodeProc, tmp_path: Path) -> None:
    """A package of several 1 MiB chunks arrives whole (the node checks size and sha256)."""
    big = make_package(tmp_path, "big", extra={"data/blob.bin": os.urandom(5 * 1024 * 1024 + 123)})
    pushed = deploy_json("push", big, "--node", node.grpc, "--activate")
    assert pushed["generation"] == "big" and pushed["activated"]
    (gen,) = pushed["state"]["generations"]
    assert gen["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert served_version(node) == ("big", "big")


def test_exit_codes(node: NodeProc, packages: dict[str, Path], tmp_path: Path) -> None:
    g = node.grpc
    ok(deploy("push", packages["v1"], "--node", g, "--activate"))
    # 1: the node refused
    r = deploy("activate", "svc", "nope", "--node", g)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "nope" in r.stderr
    r = deploy("rollback", "svc", "--node", g)
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr
    r = deploy("list", "ghost", "--node", g)
    assert r.returncode == 1 and "ghost" in r.stderr
    # 2: usage and bad files
    assert deploy("push", tmp_path / "missing.apz", "--node", g).returncode == 2
    junk = tmp_path / "junk.apz"
    junk.write_bytes(b"not a zip at all")
    r = deploy("push", junk, "--node", g)
    assert r.returncode == 2 and "junk.apz" in r.stderr
    assert deploy("mapping", "svc", "v1=0.5", "--node", g).returncode == 2
    assert deploy("mapping", "svc", "v1", "--node", g).returncode == 2
    assert deploy("push", packages["v2"], "--activate", "--mapping", "v1=1", "--node", g).returncode == 2
    assert deploy("frobnicate").returncode == 2
    assert deploy("push", packages["v2"], "--infra", tmp_path / "none.yaml").returncode == 2
    # 3: nobody there
    r = deploy("list", "--node", "127.0.0.1:1")
    assert r.returncode == 3 and "unreachable" in r.stderr
    r = deploy("push", packages["v2"], "--node", "127.0.0.1:1", "--activate")
    assert r.returncode == 3
    r = deploy("test", packages["v1"], "--node", g, "--http", "http://127.0.0.1:1")
    assert r.returncode == 3
    for r in (deploy("list", "--node", "127.0.0.1:1", "--json"),):
        assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1


def test_admin_key(tmp_path: Path, packages: dict[str, Path]) -> None:
    with run_node(tmp_path / "keyed", args=["--admin-key", "s3cret"]) as keyed:
        r = deploy("list", "--node", keyed.grpc, admin_key=False)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr and "admin-key" in r.stderr
        r = deploy("list", "--node", keyed.grpc, "--admin-key", "wrong")
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
        ok(deploy("push", packages["v1"], "--node", keyed.grpc, "--activate", "--admin-key", "s3cret"))
        r = deploy("list", "--node", keyed.grpc, "--json", env={"APINODE_ADMIN_KEY": "s3cret"})
        assert json.loads(ok(r).stdout)["services"][0]["service"] == "svc"
