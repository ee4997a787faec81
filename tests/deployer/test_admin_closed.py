"""The admin plane is closed by default: a node given no admin key generates one into its
data dir (mode 0600) and answers nobody without it, whatever their address. A caller
forwarded by a proxy on the node's host (here a real TCP relay on loopback) is refused; the
deployer on the same machine finds the key in the data dir. `--admin-open-loopback` opens
it again, knowingly, with a warning."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dataikuapi
import grpc
import pytest
import requests

from deployer.localkey import local_admin_key
from node._proto.apinode.v1 import admin_pb2 as apb
from node._proto.apinode.v1 import admin_pb2_grpc as apbg
from tests.deployer.conftest import deploy, make_package, ok, served_version
from tests.nodeproc import NodeProc, run_node


@contextlib.contextmanager
def relay(target_port: int) -> Iterator[int]:
    """A TCP forwarder on loopback to `target_port` (as nginx or a sidecar would be), on its
    own event loop in a thread: yields its port, and stops every connection on exit."""
    loop = asyncio.new_event_loop()
    port: list[int] = []
    started = threading.Event()
    stop = asyncio.Event()
    conns: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(forward(reader, writer))
        conns.add(task)
        task.add_done_callback(conns.discard)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        await stop.wait()
        server.close()
        for task in list(conns):
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _keys(node: NodeProc) -> list[str]:
    text = (node.data_dir / "admin-keys.txt").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_forwarded_callers_without_the_key_are_refused(tmp_path: Path, packages: dict[str, Path]) -> None:
    with run_node(tmp_path / "data", packages["v1"]) as node:
        path = node.data_dir / "admin-keys.txt"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        [key] = _keys(node)
        assert len(key) >= 40
        assert str(path) in node.log() and key not in node.log()

        with relay(node.http_port) as http_port, relay(node.grpc_port) as grpc_port:
            via = f"http://127.0.0.1:{http_port}"
            assert served_version(node) == ("v1", "v1")
            # HTTP admin: status, the Dataiku admin API (list, disable)
            r = requests.get(via + "/admin/status", timeout=10)
            assert r.status_code == 401 and r.json()["errorType"] == "UNAUTHORIZED"
            r = requests.post(via + "/admin/api/services/svc/actions/disable", timeout=10)
            assert r.status_code == 401
            with pytest.raises(dataikuapi.utils.DataikuException):
                dataikuapi.APINodeAdminClient(via, "").list_services()
            assert requests.post(f"{via}/public/api/v1/svc/ver/run", json={}, timeout=30).status_code == 200
            # gRPC admin: list, disable, push (which carries code)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
                admin = apbg.AdminStub(ch)
                for call in (
                    lambda: admin.ListServices(apb.ListServicesRequest(), timeout=10),
                    lambda: admin.Disable(apb.ServiceRequest(service="svc"), timeout=10),
                    lambda: admin.PushPackage(iter([apb.PushChunk(header=apb.PushHeader(size=3))]), timeout=10),
                ):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                # with the key, through the same relay: keys decide, not addresses
                reply = admin.ListServices(
                    apb.ListServicesRequest(), timeout=10, metadata=(("authorization", f"Bearer {key}"),)
                )
                assert [s.service for s in reply.services] == ["svc"]
            r = requests.get(via + "/admin/status", headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert r.status_code == 200
        assert served_version(node) == ("v1", "v1")  # still enabled, nothing pushed
        # the same refusal straight from loopback
        assert requests.get(node.http + "/admin/status", timeout=10).status_code == 401
        assert "admin call without a key from 127.0.0.1" in node.log()

        # The deployer on this machine reads the key from the data dir (--data-dir or
        # $APINODE_DATA_DIR); without it, UNAUTHENTICATED and a hint.
        r = deploy("list", "--node", node.grpc, admin_key=False)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr and "admin-keys.txt" in r.stderr
        ok(deploy("push", packages["v2"], "--node", node.grpc, "--activate", "--data-dir", node.data_dir))
        r = ok(deploy("list", "--node", node.grpc, "--json", env={"APINODE_DATA_DIR": str(node.data_dir)}))
        assert json.loads(r.stdout)["services"][0]["mapping"]["entries"][0]["generation"] == "v2"
        # a local key is never sent elsewhere: only to a loopback target
        assert local_admin_key(node.data_dir, node.grpc) == key
        assert local_admin_key(node.data_dir, f"localhost:{node.grpc_port}") == key
        assert local_admin_key(node.data_dir, "10.1.2.3:12001") is None

    with run_node(tmp_path / "data") as again:  # a restart keeps the key
        assert _keys(again) == [key]
        assert again.status()["services"]["svc"]["active"] == "v2"


def test_explicit_keys_and_open_loopback(tmp_path: Path) -> None:
    pkg = make_package(tmp_path, "v1")
    with run_node(tmp_path / "keyed", pkg, args=["--admin-key", "given-key-1"]) as node:
        assert not (node.data_dir / "admin-keys.txt").exists()  # nothing generated
        assert requests.get(node.http + "/admin/status", timeout=10).status_code == 401
        assert node.status()["ready"] is True
    with run_node(tmp_path / "open", pkg, args=["--admin-open-loopback"]) as node:
        assert not (node.data_dir / "admin-keys.txt").exists()
        assert "--admin-open-loopback" in node.log() and "any process on this host" in node.log()
        assert requests.get(node.http + "/admin/status", timeout=10).status_code == 200
        ok(deploy("list", "--node", node.grpc, admin_key=False))


def test_printed_admin_call_works(tmp_path: Path) -> None:
    """`serve --print-usage` prints an admin call that carries the generated key."""
    pkg = make_package(tmp_path, "v1")
    with run_node(tmp_path / "data", pkg, args=["--print-usage"]) as node:
        node.wait_for(lambda: "/admin/status" in node.log(), what="the usage text")
        [line] = [line for line in node.log().splitlines() if "/admin/status" in line]
        command = line.split("    # pools")[0].strip()
        assert command.startswith("curl -s -H ") and "admin-keys.txt" in command
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True)
        assert json.loads(out.stdout)["services"]["svc"]["active"] == "v1"
