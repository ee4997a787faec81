"""openloop, the C open-loop generator of `make bench` (loadtest/openloop.c), built with gcc and
run against real servers on loopback: an aiohttp server with known behaviour, raw asyncio
servers that misbehave on purpose, and a closed port. These check what it counts (answers by
status, unanswered calls by reason, connections), never how fast anything is."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest import openloop
from tests.loadtest.servers import Behaviour, http_server

BODIES = [orjson.dumps({"features": {"amount": 12.5, "n": 1}}), orjson.dumps({"features": {"amount": 3.0, "n": 2}})]
PREDICT = "/public/api/v1/svc/ep/predict"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("openloop") / "openloop"
    assert openloop.build(out) is None  # gcc, through loadtest/install_tools.sh
    assert out.exists()
    assert openloop.build(out) is None  # up to date: not rebuilt
    return out


async def _run(binary: Path, work: Path, url: str, **kw: Any) -> openloop.OpenLoop:
    kw.setdefault("duration", 1.0)
    kw.setdefault("timeout", 5.0)
    run = await asyncio.to_thread(openloop.run, url, kw.pop("bodies", BODIES), work=work, binary=binary, **kw)
    assert run.failed is None, run.failed
    return run


async def test_every_request_is_counted_by_status_and_bodies_rotate(binary: Path, tmp_path: Path) -> None:
    b = Behaviour(fail_every=4)
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + PREDICT, rate=100, duration=1.0)
    d = run.doc
    assert d["scheduled"] == d["sent"] == d["answered"] == 100
    assert b.seen == 100
    assert d["statuses"] == {"200": 75, "503": 25}
    assert run.ok == 75 and run.latency()["count"] == 75
    assert run.latency("503")["count"] == run.latency("non-2xx")["count"] == 25
    assert run.latency("2xx from the send")["count"] == 75
    assert run.answered() == {"http 503": 25} and run.unanswered() == {}
    assert d["unanswered"]["total"] == 0
    assert b.bodies[:4] == [orjson.loads(x) for x in BODIES * 2]  # rotated, in order
    lat = run.latency()
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    row = run.row()
    assert row["ok"] == 75 and row["errors"] == {"http 503": 25}


async def test_no_answer_within_the_timeout_is_unanswered_and_its_connection_dropped(
    binary: Path, tmp_path: Path
) -> None:
    b = Behaviour(delay=2.0)
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + "/echo", rate=20, duration=0.5, timeout=0.3)
    d = run.doc
    assert d["scheduled"] == d["sent"] == 10 and b.seen == 10
    assert run.ok == 0 and d["answered"] == 0
    assert run.unanswered() == {"timeout": 10}
    assert d["connections_opened"] == 10  # none came back idle: each timed-out one was closed


async def test_a_request_waits_for_a_connection_at_the_cap_and_the_wait_counts(binary: Path, tmp_path: Path) -> None:
    b = Behaviour(delay=0.1)
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + "/echo", rate=40, duration=0.5, connections=2)
    d = run.doc
    assert run.ok == d["scheduled"] == 20 and not run.errors()
    assert d["max_open"] <= 2 and len(b.peers) <= 2
    assert d["queue"]["waited_at_cap"] > 0
    # 20 answers over 2 connections take 10 rounds of >= 100 ms from the first send; the last
    # request was due 475 ms after it, so measured from its schedule it took at least 525 ms
    # (timed from the write, as a closed-loop generator would, it took ~100 ms)
    assert run.latency()["max"] >= 500
    assert run.latency("2xx from the send")["max"] < run.latency()["max"]


async def test_connection_close_is_honoured(binary: Path, tmp_path: Path) -> None:
    b = Behaviour()
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + "/close", rate=50, duration=0.4)
    d = run.doc
    assert run.ok == d["scheduled"] == 20 and not run.errors()
    assert d["connections_opened"] == d["closed_by_server"] == len(b.peers) == 20


async def test_a_chunked_answer_is_read_and_the_connection_kept(binary: Path, tmp_path: Path) -> None:
    b = Behaviour()
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + "/chunked", rate=50, duration=0.4)
    assert run.ok == run.doc["scheduled"] == b.seen == 20 and not run.errors()
    assert run.doc["closed_by_server"] == 0


async def test_the_closed_loop_keeps_its_connections_busy(binary: Path, tmp_path: Path) -> None:
    b = Behaviour()
    async with http_server(b) as url:
        run = await _run(binary, tmp_path, url + PREDICT, closed=3, duration=0.5)
    d = run.doc
    assert d["mode"] == "closed" and run.ok > 3 and not run.errors()
    assert d["connections_opened"] == len(b.peers) == 3
    assert b.seen >= run.ok


async def test_a_closed_port_is_a_result_not_a_crash(binary: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = await _run(binary, tmp_path, f"http://127.0.0.1:{port}/x", rate=50, duration=0.2)
    d = run.doc
    assert run.ok == 0 and d["sent"] == 0
    assert run.unanswered() == {"connect error": d["scheduled"]} and d["scheduled"] == 10
    assert "could not connect" in d["error"]
    assert any("could not connect" in w for w in run.warnings())


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw_server(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/raw"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return True


async def test_a_server_closing_before_its_answer_leaves_the_request_unanswered(binary: Path, tmp_path: Path) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    server, url = await _raw_server(hang_up)
    async with server:
        run = await _run(binary, tmp_path, url, rate=50, duration=0.2)
    assert run.ok == 0 and run.unanswered() == {"closed before answer": 10}
    assert run.doc["connection_errors"] == 10


async def test_answers_in_small_pieces_and_statuses_are_parsed(binary: Path, tmp_path: Path) -> None:
    served = 0

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while await _read_request(reader):
            served += 1
            status = b"200 OK" if served % 3 else b"429 Too Many Requests"
            body = b'{"result": ' + b"1" * 3000 + b"}"
            answer = b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            for i in range(0, len(answer), 700):
                writer.write(answer[i : i + 700])
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.close()

    server, url = await _raw_server(dribble)
    async with server:
        run = await _run(binary, tmp_path, url, rate=60, duration=0.5)
    assert run.doc["scheduled"] == served == 30
    assert run.doc["statuses"] == {"200": 20, "429": 10} and run.unanswered() == {}


def test_bad_usage_exits_2(binary: Path) -> None:
    out = subprocess.run([str(binary), "--url", "http://127.0.0.1:1/"], capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "--duration" in out.stderr
    both = [str(binary), "--url", "http://127.0.0.1:1/", "--rate", "5", "--closed", "2", "--duration", "1"]
    out = subprocess.run(both, capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "one of --rate and --closed" in out.stderr
    with pytest.raises(ValueError):
        openloop.run("http://127.0.0.1:1/", BODIES, duration=1, work=binary.parent, binary=binary)
