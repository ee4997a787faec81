"""The load loops over JSON HTTP, against a real aiohttp server with known behaviour."""

from __future__ import annotations

import asyncio
from typing import Any

from loadtest import LoadConfig, LoadResult, Target, run, run_load
from tests.loadtest.servers import Behaviour, http_server

BODY = {"features": {"amount": 12.5, "country": "FR"}}


def _config(url: str, api_key: str | None = None, **kw: Any) -> LoadConfig:
    target = Target(url=url, service="svc", endpoint="ep", api_key=api_key)
    return LoadConfig(target=target, bodies=(BODY,), **kw)


def _adds_up(r: LoadResult) -> None:
    assert r.sent == r.ok + r.error_count
    assert r.ok_latency.count == r.ok
    assert r.error_latency.count == r.error_count


async def test_closed_loop_measures_the_injected_delay() -> None:
    b = Behaviour(delay=0.020)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=4, duration=1.0))
    _adds_up(r)
    assert r.error_count == 0 and r.dropped == 0
    assert r.sent == b.seen
    assert 20.0 <= (r.ok_latency.p50() or 0) <= 30.0
    # 4 clients, one request each per ~20 ms, for 1 s.
    assert 50 <= r.ok <= 200
    assert r.ok_throughput > 50
    assert b.bodies[0] == BODY


async def test_count_bounded_run_sends_exactly_n() -> None:
    b = Behaviour()
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=3, requests=50, duration=None))
    _adds_up(r)
    assert r.sent == r.ok == b.seen == 50


async def test_server_errors_are_keyed_by_status() -> None:
    b = Behaviour(fail_every=4)
    async with http_server(b) as url:
        r = await run_load(_config(url, concurrency=2, requests=200, duration=None))
    _adds_up(r)
    assert r.errors == {"http 503": 50}
    assert r.ok == 150


async def test_api_key_goes_as_basic_auth() -> None:
    b = Behaviour(api_key="s3cret")
    async with http_server(b) as url:
        good = await run_load(_config(url, requests=5, duration=None, api_key="s3cret"))
        bad = await run_load(_config(url, requests=5, duration=None, api_key="nope"))
    assert good.ok == 5
    assert bad.errors == {"http 401": 5}


async def test_connection_errors_are_counted() -> None:
    async with http_server(Behaviour()) as url:
        pass  # the port is closed again
    r = await run_load(_config(url, concurrency=2, requests=10, duration=None, timeout=2.0))
    _adds_up(r)
    assert r.ok == 0 and r.error_count == 10
    assert all(k.startswith("conn ") for k in r.errors)


async def test_any_path_and_warmup() -> None:
    b = Behaviour()
    async with http_server(b) as url:
        config = LoadConfig(target=Target(url=url, path="/echo"), requests=20, duration=None, warmup=0.2)
        r = await run_load(config)
    assert r.ok == 20
    assert b.seen > 20  # the warmup's requests were sent, not counted
    assert b.bodies[0] == {}


async def test_open_loop_keeps_its_rate_through_a_stall() -> None:
    """Coordinated omission: only the open loop sees what a stall does to callers."""
    stall = Behaviour(stall=1.0)
    async with http_server(stall) as url:
        open_r = await run_load(_config(url, rate=100.0, duration=2.0))
    _adds_up(open_r)
    assert 190 <= open_r.sent <= 201
    assert open_r.dropped == 0
    # Requests scheduled during the stall waited for its end: latency from intended time.
    assert (open_r.ok_latency.p99() or 0) >= 900.0
    # Those scheduled in the stall's first 0.6 s (30% of all) waited at least 400 ms.
    assert (open_r.ok_latency.percentile_ms(75.0) or 0) >= 300.0

    stall = Behaviour(stall=1.0)
    async with http_server(stall) as url:
        closed_r = await run_load(_config(url, concurrency=1, duration=2.0))
    _adds_up(closed_r)
    # One request waited out the stall; the rest went fast: the p99 hides it.
    assert (closed_r.ok_latency.max_ms() or 0) >= 900.0
    assert (closed_r.ok_latency.p99() or 0) < 100.0


async def test_open_loop_drops_beyond_the_inflight_cap() -> None:
    b = Behaviour(delay=0.2)
    async with http_server(b) as url:
        r = await run_load(_config(url, rate=200.0, duration=0.5, max_inflight=5))
    _adds_up(r)
    assert r.dropped > 0
    assert r.sent + r.dropped >= 95
    assert r.sent == b.seen
    assert any("dropped" in w for w in r.warnings())


async def test_poisson_open_loop_rate_is_about_right() -> None:
    async with http_server(Behaviour()) as url:
        r = await run_load(_config(url, rate=400.0, poisson=True, duration=1.0, seed=7))
    _adds_up(r)
    assert 300 <= r.sent <= 500


async def test_sync_run_in_a_thread_uses_uvloop() -> None:
    async with http_server(Behaviour(delay=0.005)) as url:
        r = await asyncio.to_thread(run, _config(url, concurrency=2, requests=40, duration=None))
    assert r.ok == 40
    assert len(r.cpu) == 1 and 0.0 <= r.cpu[0] <= 1.5


async def test_self_check_flags_a_busy_generator() -> None:
    """Server and generator share this event loop here: a CPU-heavy server starves it."""
    async with http_server(Behaviour(burn=0.005)) as url:
        r = await run_load(_config(url, rate=300.0, duration=0.6))
    _adds_up(r)
    assert r.saturated
    assert r.late_max > 0.05
    warnings = " ".join(r.warnings())
    assert "CPU-bound" in warnings and "behind schedule" in warnings
