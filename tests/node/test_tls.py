"""TLS on both servers, and client-certificate verification, with certificates made here."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import struct_pb2

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import run_node
from tests.packages import function_package


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.crt", *ext, cwd=d)  # fmt: skip


def grpc_run(port: int, d: Path, *, client_cert: bool) -> object:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(d / "ca.crt").read_bytes(),
        private_key=(d / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(d / "client.crt").read_bytes() if client_cert else None,
    )
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        return pbg.ApiNodeStub(ch).Run(
            pb.RunRequest(service="svc", endpoint="e", arguments=struct_pb2.Struct()), timeout=10
        )


def test_tls_and_client_certificates(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    pkg = function_package(tmp_path, {"e": {"function": "pid"}})
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    with run_node(tmp_path / "data", pkg, args=tls) as node:
        url = f"https://localhost:{node.http_port}/public/api/v1/svc/e/run"
        assert requests.post(url, verify=pki / "ca.crt").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url)  # not trusted without the CA
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"http://localhost:{node.http_port}/public/api/v1/svc/e/run", timeout=5)
        assert grpc_run(node.grpc_port, pki, client_cert=False) is not None
        # the log says what a caller must use (it used to say http://)
        assert f"serving on https://127.0.0.1:{node.http_port} and grpc (TLS) 127.0.0.1:{node.grpc_port}" in node.log()
        assert "http://" not in node.log()
    mtls = [*tls, "--tls-client-ca", str(pki / "ca.crt")]
    with run_node(tmp_path / "data2", pkg, args=mtls) as node:
        url = f"https://localhost:{node.http_port}/public/api/v1/svc/e/run"
        with pytest.raises(requests.exceptions.RequestException):
            requests.post(url, verify=pki / "ca.crt", timeout=5)  # no client certificate
        ok = requests.post(url, verify=pki / "ca.crt", cert=(pki / "client.crt", pki / "client.key"))
        assert ok.status_code == 200
        assert grpc_run(node.grpc_port, pki, client_cert=True) is not None
        with pytest.raises(grpc.RpcError) as err:
            grpc_run(node.grpc_port, pki, client_cert=False)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"serving on https://127.0.0.1:{node.http_port} and grpc (mutual TLS) 127.0.0.1:" in node.log()


def test_a_stalled_tls_handshake_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    """asyncio hands a TLS connection to the HTTP connection guard only once its handshake
    is done; before that neither --header-timeout nor the connection cap applied, and a
    client that stalled in the handshake held its descriptor for asyncio's default 60 s."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    pkg = function_package(tmp_path, {"e": {"function": "pid"}})
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"), "--header-timeout", "1"]
    with run_node(tmp_path / "data", pkg, args=tls) as node:
        stalled = [socket.create_connection(("127.0.0.1", node.http_port)) for _ in range(3)]
        for s in stalled:
            s.sendall(b"\x16\x03\x01")  # the first bytes of a TLS ClientHello, never the rest
        deadline = time.monotonic() + 30  # far below asyncio's 60 s, far above the 1 s asked
        for s in stalled:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert s.recv(100) == b""  # closed by the node (a timeout here: still open)
            except ConnectionResetError:
                pass  # closed by the node, abruptly
            s.close()
        url = f"https://localhost:{node.http_port}/public/api/v1/svc/e/run"
        assert requests.post(url, verify=pki / "ca.crt", timeout=30).status_code == 200
