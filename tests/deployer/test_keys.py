"""Keys without restarts: admin keys through the official Dataiku admin client
(`APINodeAdminClient.auth()`) and the CLI, service API keys through the CLI (gRPC Admin)
and the HTTP admin API; each change applies to the next call, survives a restart, and is
stored as a digest only. Failed authentications leave an audit line without the key."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import dataikuapi
import grpc
import pytest
import requests
from dataikuapi.utils import DataikuException

from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc
from tests.deployer.conftest import deploy, make_package, ok
from tests.deployer.kinds import kinds_package
from tests.nodeproc import run_node

KEY = "kinds-service-key-1"


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _admin_ok(http: str, key: str) -> int:
    return requests.get(http + "/admin/api/services", auth=(key, ""), timeout=30).status_code


def test_admin_keys_rotate_through_the_dataiku_client(tmp_path: Path) -> None:
    pkg = make_package(tmp_path, "v1")
    data = tmp_path / "data"
    with run_node(data, pkg) as node:
        first = node.admin_key()
        assert first is not None
        auth = dataikuapi.APINodeAdminClient(node.http, first).auth()
        listed = auth.list_keys()
        assert [(k["source"], k["id"]) for k in listed] == [("admin-keys.txt", f"file-{_sha(first)[:8]}")]

        new = auth.add_key(label="ci", description="the CI pipeline", created_by="ops")
        assert len(new["key"]) == 64 and new["label"] == "ci" and new["source"] == "admin-api"
        assert _admin_ok(node.http, new["key"]) == 200  # at once, no restart
        listed = auth.list_keys()
        assert sorted(k["id"] for k in listed) == sorted([f"file-{_sha(first)[:8]}", new["id"]])
        assert not any("key" in k or "sha256" in k for k in listed)  # shown once, at creation
        stored = (data / "admin-keys.json").read_text()
        assert new["key"] not in stored and _sha(new["key"]) in stored

        # The generated key is retired (its line leaves admin-keys.txt): refused at once.
        auth.delete_key_by_id(f"file-{_sha(first)[:8]}")
        assert _admin_ok(node.http, first) == 401
        assert first not in (data / "admin-keys.txt").read_text()
        auth = dataikuapi.APINodeAdminClient(node.http, new["key"]).auth()
        with pytest.raises(DataikuException, match=r"CONFLICT.*last admin key"):
            auth.delete_key_by_id(new["id"])
        with pytest.raises(DataikuException, match=r"CONFLICT.*last admin key"):
            auth.delete_key(new["key"])
        with pytest.raises(DataikuException, match="NOT_FOUND"):
            auth.delete_key_by_id("nope")
        with pytest.raises(DataikuException, match="NOT_SUPPORTED"):
            auth.add_key(label="x", expiry="2030-01-01")
        third = auth.add_key(label="other")
        auth.delete_key(third["key"])  # by the key itself, as the client's delete_key sends it
        assert _admin_ok(node.http, third["key"]) == 401
        assert _admin_ok(node.http, "not-a-key") == 401

    log = (tmp_path / "data.log").read_text()
    assert "admin call with a wrong key from 127.0.0.1 (GET /admin/api/services)" in log
    assert first not in log and third["key"] not in log and "not-a-key" not in log
    assert f"admin key {new['id']} added by file-{_sha(first)[:8]}" in log

    with run_node(data, pkg) as node:  # a restart keeps the keys, and generates none
        assert _admin_ok(node.http, new["key"]) == 200
        assert _admin_ok(node.http, first) == 401
        assert node.admin_key() is None  # admin-keys.txt holds no key any more


def test_admin_keys_through_the_cli(tmp_path: Path) -> None:
    with run_node(tmp_path / "data", make_package(tmp_path, "v1")) as node:
        added = json.loads(ok(deploy("keys", "add", "--label", "cli", "--node", node.grpc, "--json")).stdout)
        assert len(added["key"]) == 64 and added["label"] == "cli"
        assert _admin_ok(node.http, added["key"]) == 200
        listed = json.loads(ok(deploy("keys", "list", "--node", node.grpc, "--json")).stdout)["keys"]
        assert {k["id"] for k in listed} == {added["id"], f"file-{_sha(node.admin_key() or '')[:8]}"}
        assert all("key" not in k for k in listed)
        human = ok(deploy("keys", "list", "--node", node.grpc)).stdout
        assert added["id"] in human and added["key"] not in human
        ok(deploy("keys", "delete", added["id"], "--node", node.grpc))
        assert _admin_ok(node.http, added["key"]) == 401
        r = deploy("keys", "delete", "nope", "--node", node.grpc)
        assert r.returncode == 1 and "no admin key 'nope'" in r.stderr and "Traceback" not in r.stderr
        r = deploy("keys", "list", "--node", node.grpc, "--admin-key", "wrong-admin-key")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert re.search(r"admin call with a wrong key from ipv4:127\.0\.0\.1:\d+ \(Admin/ListAdminKeys\)", node.log())
        assert "wrong-admin-key" not in node.log()

        # A key written into admin-keys.txt by hand applies without a restart, and so does its removal.
        keys_txt = node.data_dir / "admin-keys.txt"
        before = keys_txt.read_text()
        keys_txt.write_text(before + "hand-written-admin-key-1\n")
        node.wait_for(lambda: _admin_ok(node.http, "hand-written-admin-key-1") == 200, what="the new key")
        keys_txt.write_text(before)
        node.wait_for(lambda: _admin_ok(node.http, "hand-written-admin-key-1") == 401, what="the key's removal")


def test_service_keys_rotate_without_restart_on_both_admin_transports(tmp_path: Path) -> None:
    pkg = kinds_package(tmp_path, api_keys=[KEY])
    data = tmp_path / "data"
    with run_node(data, pkg) as node:
        url = node.url("kinds", "customer", "lookup")

        def status(key: str | None) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return requests.post(url, json={"data": {"customer_id": "C1"}}, headers=headers, timeout=30).status_code

        assert status(KEY) == 200
        listed = json.loads(ok(deploy("keys", "list", "--service", "kinds", "--node", node.grpc, "--json")).stdout)
        assert [(k["id"], k["source"]) for k in listed["keys"]] == [("key0", "package")]

        # CLI (gRPC Admin): a new key, printed once, valid at the next call; the package's stays valid.
        r = ok(deploy("keys", "add", "--service", "kinds", "--id", "ci", "--label", "CI", "--node", node.grpc))
        new = r.stdout.strip().splitlines()[-1]
        assert len(new) == 64
        assert status(new) == 200 and status(KEY) == 200
        stored = (data / "config" / "services" / "kinds" / "api_keys.json").read_text()
        assert new not in stored and KEY not in stored and _sha(new) in stored

        # HTTP admin API: list, add, revoke.
        base = node.http + "/admin/api/services/kinds/keys"
        h = node.admin_headers()
        assert sorted(k["id"] for k in requests.get(base, headers=h, timeout=30).json()) == ["ci", "key0"]
        other = requests.post(base, json={"label": "web"}, headers=h, timeout=30).json()
        assert status(other["key"]) == 200
        r2 = requests.delete(base + "/key0", headers=h, timeout=30)
        assert r2.status_code == 200, r2.text
        assert status(KEY) == 401 and status(new) == 200  # revoked at once
        r2 = requests.delete(base + "/key0", headers=h, timeout=30)
        assert r2.status_code == 404 and r2.json()["errorType"] == "NOT_FOUND"
        assert requests.get(node.http + "/admin/api/services/nope/keys", headers=h, timeout=30).status_code == 404
        bad = requests.post(base, json={"id": "a\nb"}, headers=h, timeout=30)
        assert bad.status_code == 400 and "a key id is" in bad.json()["message"]

        # gRPC Admin directly: revoke, and the last key is refused.
        with grpc.insecure_channel(node.grpc) as ch:
            stub = admin_pb2_grpc.AdminStub(node.admin_channel(ch))
            left = stub.RevokeServiceKey(admin_pb2.DeleteKeyRequest(service="kinds", id=other["id"]))
            assert [k.id for k in left.keys] == ["ci"]
            with pytest.raises(grpc.RpcError) as err:
                stub.RevokeServiceKey(admin_pb2.DeleteKeyRequest(service="kinds", id="ci"))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "a service without keys is public" in (err.value.details() or "")
        assert status(other["key"]) == 401 and status(None) == 401
        r = deploy("keys", "delete", "ci", "--service", "kinds", "--node", node.grpc)
        assert r.returncode == 1 and "last key of service 'kinds'" in r.stderr

    log = (tmp_path / "data.log").read_text()
    assert "wrong API key for service kinds from 127.0.0.1" in log and "no API key for service kinds" in log
    assert KEY not in log and new not in log and other["key"] not in log
    assert "API key ci of service kinds added by" in log

    with run_node(data, pkg) as node:  # surviving a restart
        url = node.url("kinds", "customer", "lookup")
        assert status(new) == 200 and status(KEY) == 401
