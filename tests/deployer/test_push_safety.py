"""A refused push leaves the node serving what it served: bad digest, flipped bytes,
failing test queries, an upload cut short."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import grpc
import pytest

from deployer.client import AdminClient
from deployer.errors import DeployError
from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc
from tests.deployer.conftest import deploy, deploy_json, ok, served_version
from tests.nodeproc import NodeProc


def _generations(node: NodeProc) -> list[str]:
    (svc,) = deploy_json("list", "--node", node.grpc)["services"]
    return [g["generation"] for g in svc["generations"]]


def _flip_code_bytes(src: Path, dst: Path) -> None:
    """Flips bytes inside the stored data of code/funcs.py (the zip directory stays intact)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("code/funcs.py")
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    for i in range(start + 2, start + 2 + min(8, info.compress_size - 4)):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_wrong_sha256_is_refused(node: NodeProc, packages: dict[str, Path]) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    wrong = hashlib.sha256(b"something else").hexdigest()
    r = deploy("push", packages["v2"], "--node", node.grpc, "--activate", "--sha256", wrong)
    assert r.returncode == 1, r.stderr
    assert "sha256" in r.stderr and "Traceback" not in r.stderr
    assert served_version(node) == ("v1", "v1")
    assert _generations(node) == ["v1"]
    # the right digest, given explicitly, goes through
    right = hashlib.sha256(packages["v2"].read_bytes()).hexdigest()
    ok(deploy("push", packages["v2"], "--node", node.grpc, "--activate", "--sha256", right))
    assert served_version(node) == ("v2", "v2")


def test_flipped_bytes_are_refused(node: NodeProc, packages: dict[str, Path], tmp_path: Path) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    corrupted = tmp_path / "svc-v2-corrupted.apz"
    _flip_code_bytes(packages["v2"], corrupted)
    r = deploy("push", corrupted, "--node", node.grpc, "--activate")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refused" in r.stderr and "INVALID_ARGUMENT" in r.stderr and "Traceback" not in r.stderr
    assert served_version(node) == ("v1", "v1")
    assert _generations(node) == ["v1"]


def test_failing_test_queries_are_refused(node: NodeProc, packages: dict[str, Path]) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    for extra in (["--activate"], ["--mapping", "v1=0.5,v4=0.5"]):
        r = deploy("push", packages["broken"], "--node", node.grpc, *extra)
        assert r.returncode == 1, r.stderr
        assert "test query" in r.stderr and "broken on purpose" in r.stderr
        assert served_version(node) == ("v1", "v1")
        state = deploy_json("list", "svc", "--node", node.grpc)["services"][0]
        assert state["mapping"]["entries"] == [{"generation": "v1", "proba": 1.0}]
    assert node.status()["ready"] is True


def test_upload_cut_short_is_refused(node: NodeProc, packages: dict[str, Path]) -> None:
    ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
    data = packages["v2"].read_bytes()
    header = admin_pb2.PushHeader(
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), filename="v2.apz", activate=True
    )
    chunks = [admin_pb2.PushChunk(header=header), admin_pb2.PushChunk(data=data[: len(data) // 2])]
    with grpc.insecure_channel(node.grpc) as ch:
        with pytest.raises(grpc.RpcError) as exc:
            admin_pb2_grpc.AdminStub(node.admin_channel(ch)).PushPackage(iter(chunks), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert served_version(node) == ("v1", "v1")
    # the library client reports the same as one DeployError
    with AdminClient(node.grpc, node.admin_key()) as client, pytest.raises(DeployError) as err:
        client.push(packages["v2"], activate=True, sha256="0" * 64)
    assert err.value.code == "INVALID_ARGUMENT" and err.value.exit_code == 1
    assert served_version(node) == ("v1", "v1")
