"""What one client may hold (README, Operations): slow heads and bodies time out, an
oversized Content-Length is refused before its body, idle connections are closed, and a flood
of connections past the cap leaves the node able to answer /ready and replace a worker."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.nodeproc import NodeProc, run_node
from tests.packages import function_package

ONE = {"floor": 1, "cruise": 1, "ceil": 1}
# Short head/body deadlines, long idle timeout: a connection closed within the idle timeout
# was closed by the deadline under test (and its 408 says which).
ARGS = ["--header-timeout", "1", "--body-timeout", "2", "--idle-timeout", "120", "--max-body-mb", "0.05"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    tmp = tmp_path_factory.mktemp("conn-limits")
    pkg = function_package(tmp, {"echo": {"function": "echo", "pool": ONE}})
    with run_node(tmp / "data", pkg, args=ARGS) as n:
        yield n


def connect(node: NodeProc, port: int | None = None) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port or node.http_port), timeout=60)


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, orjson.loads(body)


def test_slowloris_heads_are_answered_408_and_closed(node: NodeProc) -> None:
    socks = [connect(node) for _ in range(20)]
    for s in socks:
        s.sendall(b"POST /public/api/v1/svc/echo/run HTTP/1.1\r\nHost: x\r\n")
    closed: dict[int, bytes] = {}
    deadline = time.monotonic() + 60  # the idle timeout (120 s) is not what closes them
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for i, s in enumerate(socks):  # one header byte a connection, 5 a second
            if i not in closed:
                try:
                    s.sendall(b"X")
                except OSError:  # closed by the node: collect its answer
                    s.settimeout(10)
                    closed[i] = read_until_closed(s)
        time.sleep(0.2)
    assert len(closed) == len(socks)
    for raw in closed.values():
        status, headers, body = answer(raw)
        assert status == 408 and headers["connection"] == "close"
        assert body["errorType"] == "REQUEST_TIMEOUT" and "--header-timeout" in body["message"]
    assert requests.post(node.url("svc", "echo", "run"), json={"a": 1}, timeout=30).json()["response"] == {"a": 1}


def test_body_that_never_completes_is_answered_408_and_closed(node: NodeProc) -> None:
    s = connect(node)
    head = b"POST /public/api/v1/svc/echo/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    s.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"a": ')
    status, headers, body = answer(read_until_closed(s))
    assert status == 408 and headers["connection"] == "close"
    assert body["errorType"] == "REQUEST_TIMEOUT"
    assert body["message"] == "the request body did not arrive within 2 s of its head (--body-timeout)"


def test_huge_content_length_is_refused_before_the_body(node: NodeProc) -> None:
    """413, not 408: the node answered without waiting for a byte of the body."""
    s = connect(node)
    s.sendall(b"POST /public/api/v1/svc/echo/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
    status, headers, body = answer(read_until_closed(s))
    assert status == 413 and headers["connection"] == "close"
    assert body["errorType"] == "PAYLOAD_TOO_LARGE"
    assert body["message"] == (
        "the request body is over this node's limit of 52428 bytes (--max-body-mb): it announces 1000000000000 bytes"
    )


def test_idle_grpc_connection_gets_goaway(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"echo": {"function": "echo", "pool": ONE}})
    with run_node(tmp_path / "data", pkg, args=["--idle-timeout", "1"]) as node:
        with grpc.insecure_channel(node.grpc) as ch:  # the connection works first
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        s = connect(node, node.grpc_port)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
        goaways = []
        buf = b""
        while chunk := s.recv(65536):  # until the node closes the connection
            buf += chunk
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3]):
                length, kind, flags = int.from_bytes(buf[:3]), buf[3], buf[4]
                payload, buf = buf[9 : 9 + length], buf[9 + length :]
                if kind == 4 and not flags & 1:  # SETTINGS: acknowledged, as a live client does
                    s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                elif kind == 6 and not flags & 1:  # PING: answered
                    s.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
                elif kind == 7:
                    goaways.append(payload)
        assert goaways, "closed without GOAWAY"
        assert goaways[0][8:] == b"connection idle"  # the debug data of gRPC's max_connection_idle


def test_idle_flood_past_the_cap_leaves_ready_and_worker_replacement(tmp_path: Path) -> None:
    """With 400 descriptors, 600 idle connections (HTTP and gRPC) would exhaust the node;
    capped below the limit, /ready answers and a killed worker is replaced."""
    pkg = function_package(tmp_path, {"echo": {"function": "echo", "pool": ONE}})
    args = ["--idle-timeout", "120", "--shutdown-grace", "300"]
    with run_node(tmp_path / "data", pkg, args=args, nofile=400) as node:
        flood = [connect(node, port) for port in (node.http_port, node.grpc_port) for _ in range(300)]
        try:
            for _ in range(3):  # each new client finds room (the longest-idle connection makes way)
                r = requests.get(node.http + "/ready", timeout=30)
                assert r.status_code == 200 and r.json()["ready"] is True
            [victim] = node.pool("svc", "echo")["workers"]["pids"]
            os.kill(victim, signal.SIGKILL)
            node.wait_for(
                lambda: node.pool("svc", "echo")["workers"]["pids"] not in ([], [victim]), what="a new worker"
            )
            r = requests.post(node.url("svc", "echo", "run"), json={"a": 2}, timeout=30)
            assert r.json()["response"] == {"a": 2}
            assert len(os.listdir(f"/proc/{node.proc.pid}/fd")) < 400
            assert "--max-connections 4096 lowered to 100" in node.log()
            assert "HTTP connection cap reached (100, --max-connections)" in node.log()
            node.proc.send_signal(signal.SIGTERM)  # idle connections do not hold the exit for the grace period
            assert node.proc.wait(120) == 0
        finally:
            for s in flood:
                s.close()
