"""The fast HTTP transport (raw asyncio connections) against a real aiohttp server."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import LoadConfig, LoadResult, Target, run_load
from loadtest.fast_http import frame_requests
from tests.loadtest.servers import Behaviour, http_server

BODY = {"features": {"amount": 12.5, "country": "FR"}}


def _config(url: str, path: str | None = None, **kw: Any) -> LoadConfig:
    target = Target(url=url, path=path, service="svc", endpoint="ep")
    kw.setdefault("duration", None)
    return LoadConfig(target=target, bodies=(BODY,), **kw)


def _adds_up(r: LoadResult) -> None:
    assert r.sent == r.ok + r.error_count
    assert r.ok_latency.count == r.ok
    assert r.error_latency.count == r.error_count


def test_requests_are_framed_once_with_their_length() -> None:
    target = Target(url="http://127.0.0.1:8080/", service="svc", endpoint="ep", api_key="k")
    (req,) = frame_requests(target, [BODY])
    head, _, body = req.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /public/api/v1/svc/ep/predict HTTP/1.1"
    assert b"Host: 127.0.0.1:8080" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert b"Authorization: Basic azo=" in lines
    assert body == b'{"features":{"amount":12.5,"country":"FR"}}'


@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_counts_add_up_and_a_503_is_counted_by_status(client: str) -> None:
    b = Behaviour(fail_every=5)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=4, requests=400, http_client=client))
    _adds_up(r)
    assert r.sent == b.seen == 400
    assert r.errors == {"http 503": 80}
    assert r.ok == 320
    assert r.error_latency_by_key["http 503"].count == 80
    back = LoadResult.from_dict(r.to_dict())
    assert back.error_latency_by_key["http 503"].count == 80
    assert b.bodies[0] == BODY


async def test_closed_loop_keeps_one_connection_per_client() -> None:
    b = Behaviour(delay=0.002)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=3, requests=300))
    assert r.ok == 300
    assert len(b.peers) == 3  # keep-alive: 300 requests over 3 connections


async def test_open_loop_opens_connections_only_as_needed() -> None:
    b = Behaviour(delay=0.001)
    async with http_server(b) as url:
        r = await run_load(_config(url, rate=200.0, duration=1.0))
    _adds_up(r)
    assert r.ok == r.sent >= 190 and r.dropped == 0
    # ~1 ms answers at 5 ms gaps: connections are reused (a stall of the machine may open a few more).
    assert len(b.peers) < r.sent // 4


async def test_chunked_answers_and_connection_close() -> None:
    b = Behaviour()
    async with http_server(b) as url:
        chunked = await run_load(_config(url, "/chunked", concurrency=2, requests=50))
        closing = await run_load(_config(url, "/close", concurrency=2, requests=20))
    assert chunked.ok == 50 and not chunked.errors
    assert closing.ok == 20 and not closing.errors
    assert len(b.peers) == 20  # the server closed each connection: a new one per request


async def test_a_timeout_drops_the_connection_and_the_run_goes_on() -> None:
    b = Behaviour(delay=0.5)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=2, requests=4, timeout=0.1))
    _adds_up(r)
    assert r.errors == {"timeout": 4}
    assert len(b.peers) == 4  # a connection whose answer timed out is not reused


async def test_connections_cap_makes_callers_wait_not_fail() -> None:
    b = Behaviour(delay=0.01)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=8, connections=2, requests=80))
    _adds_up(r)
    assert r.ok == 80
    assert len(b.peers) == 2
    assert (r.ok_latency.p50() or 0) >= 30.0  # 8 callers share 2 connections of 10 ms answers
