"""The refusal before aiohttp (node/http/refuse.py, node/http/guard.py): a whole request in
one read, on a connection at a request boundary, to a full pool, is answered from its bytes
with the prepared 503; anything the connection cannot frame with certainty (a split
request, pipelining, a body that looks like a request) goes through aiohttp, which refuses
it the ordinary way. Either way the connection stays in step: every request gets exactly
one answer, in order, and the connection serves again once the pool has room."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.inproc import InProcNode, run_node
from tests.packages import logistic_package

ROW = {"amount": 1.5, "hour": 3, "distance": 0.2}
PATH = "/public/api/v1/fraud/score/predict"


def request_bytes(body: bytes, path: str = PATH, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


BODY = json.dumps({"features": ROW}).encode()


class Conn:
    """A raw keep-alive HTTP/1.1 connection that reads answers one by one."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, json.loads(body)

    def nothing_more(self, wait: float = 0.5) -> bool:
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return self.buf == b""
        finally:
            self.sock.settimeout(30)
        self.buf += data
        return False

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the node")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def http_status(node: InProcNode) -> dict[str, int]:
    status: dict[str, int] = node.status()["http"]
    return status


@contextmanager
def full_pool(node: InProcNode) -> Iterator[None]:
    """The pool's one worker stopped while it holds a request: with queue 0, every other
    request is refused. The held request is served once the worker goes on."""
    (worker,) = node.pool("fraud", "score")["workers"]["pids"]
    os.kill(worker, signal.SIGSTOP)
    held: dict[str, requests.Response] = {}
    t = threading.Thread(
        target=lambda: held.update(r=requests.post(node.http + PATH, json={"features": ROW}, timeout=120))
    )
    t.start()
    try:
        node.wait_for(lambda: node.pool("fraud", "score")["workers"]["busy"] == 1, what="a busy worker")
        yield
    finally:
        os.kill(worker, signal.SIGCONT)
        t.join(120)
    assert held["r"].status_code == 200


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcNode]:
    tmp = tmp_path_factory.mktemp("raw")
    pkg, _ = logistic_package(tmp, pool={"floor": 1, "cruise": 1, "ceil": 1, "queue": 0, "timeout": 4000})
    with run_node(tmp / "data", pkg, args=["--ping-timeout", "300"]) as n:
        yield n


def _is_overloaded(answer: tuple[int, dict[str, str], Any]) -> bool:
    status, headers, doc = answer
    return (
        status == 503
        and doc["errorType"] == "OVERLOADED"
        and set(doc) == {"errorType", "message", "detailedMessage"}
        and headers["retry-after"] == "2"
        and headers["content-type"] == "application/json"
        and headers["dss-api-version"] == "v1"
    )


def test_a_whole_request_is_refused_from_its_bytes_and_the_connection_serves_on(node: InProcNode) -> None:
    c = Conn(node.http_port)
    try:
        with full_pool(node):
            before = http_status(node)["refusedUnparsed"]
            rejected = node.pool("fraud", "score")["rejected"]
            for _ in range(3):
                c.send(request_bytes(BODY))
                assert _is_overloaded(c.answer())
            c.send(request_bytes(b"not json at all"))  # the body is not looked at: refused alike
            assert _is_overloaded(c.answer())
            assert http_status(node)["refusedUnparsed"] == before + 4
            assert node.pool("fraud", "score")["rejected"] == rejected + 4
        c.send(request_bytes(BODY))  # room again: the same connection, served
        status, _, doc = c.answer()
        assert status == 200 and "prediction" in doc["result"], doc
        assert c.nothing_more()
    finally:
        c.close()
    gone = Conn(node.http_port)  # let in, then the caller leaves before its answer
    gone.send(request_bytes(BODY))
    gone.close()
    # Every request let in from its bytes was counted until answered, or its caller gone.
    node.wait_for(lambda: node.pool("fraud", "score")["frontAdmitted"] == 0, what="no request counted in the front")


def test_what_cannot_be_framed_from_one_read_is_refused_by_aiohttp_in_step(node: InProcNode) -> None:
    """Pipelined requests, a head and body in two reads, and a body that carries a whole
    request: each request is answered once, in order; none is refused from its bytes."""
    with full_pool(node):
        before = http_status(node)["refusedUnparsed"]
        piped = Conn(node.http_port)
        piped.send(request_bytes(BODY) + request_bytes(BODY))
        assert _is_overloaded(piped.answer()) and _is_overloaded(piped.answer())
        assert piped.nothing_more()

        split = Conn(node.http_port)
        whole = request_bytes(BODY)
        split.send(whole[:40])
        time.sleep(0.2)
        split.send(whole[40:])
        assert _is_overloaded(split.answer())
        assert split.nothing_more()

        inner = request_bytes(BODY)  # a request as the body of another: one answer, not two
        smuggler = Conn(node.http_port)
        outer = request_bytes(inner)
        head_end = outer.index(b"\r\n\r\n") + 4
        smuggler.send(outer[:head_end])
        time.sleep(0.2)
        smuggler.send(outer[head_end:])
        assert _is_overloaded(smuggler.answer())
        assert smuggler.nothing_more()

        assert http_status(node)["refusedUnparsed"] == before
    for c in (piped, split, smuggler):  # room again: each connection is in step and served
        c.send(request_bytes(BODY))
        status, _, doc = c.answer()
        assert status == 200, doc
        c.close()


def test_only_a_plain_predict_with_an_accepted_key_is_refused_from_its_bytes(node: InProcNode) -> None:
    """Everything the prepared answer would get wrong is left to aiohttp: a request that
    asks to close, forces a generation, expects 100-continue, or comes in HTTP/1.0; a
    verb that does not exist (404), a service that does not (404)."""
    with full_pool(node):
        before = http_status(node)["refusedUnparsed"]
        cases = [
            (request_bytes(BODY, extra="Connection: close\r\n"), 503),
            (request_bytes(BODY, extra="X-Dispatch-Forced-Generation: v1\r\n"), 503),
            (request_bytes(BODY).replace(b"HTTP/1.1", b"HTTP/1.0", 1), 503),
            (request_bytes(BODY, path="/public/api/v1/fraud/score/nosuchverb"), 404),
            (request_bytes(BODY, path="/public/api/v1/nosuch/score/predict"), 404),
            (request_bytes(BODY, path="/public/api/v1/fraud/score/predict?x=1"), 503),
        ]
        for data, want in cases:
            c = Conn(node.http_port)
            c.send(data)
            status, _, doc = c.answer()
            assert status == want, (data[:80], doc)
            c.close()
        assert http_status(node)["refusedUnparsed"] == before


def test_a_client_that_sends_without_reading_is_held_back_not_buffered(node: InProcNode) -> None:
    """Whole requests sent on and on without reading a single answer: once the socket's
    buffers are full the node stops reading from it (aiohttp's back-pressure), instead of
    keeping refusals in memory for a client that never reads them. (Sends that arrive
    coalesced in one read are pipelining to the node, which leaves them to aiohttp; either
    way nothing piles up.)"""
    limit = 64 * 1024 * 1024
    with full_pool(node):
        c = Conn(node.http_port)
        c.sock.settimeout(3.0)
        one = request_bytes(BODY)
        sent = 0
        try:
            while sent < limit:
                sent += c.sock.send(one)
        except TimeoutError:
            pass
        assert sent < limit, "the node read 64 MB of requests whose answers nobody read"
        assert requests.get(node.http + "/ready", timeout=30).status_code == 200
        c.close()
