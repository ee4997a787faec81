"""Several client processes, and sweeps against a latency objective."""

from __future__ import annotations

import asyncio
from typing import Any

from loadtest import LoadConfig, Slo, Target, run, run_sweep
from tests.loadtest.servers import Behaviour, http_server


def _config(url: str, **kw: Any) -> LoadConfig:
    return LoadConfig(target=Target(url=url, path="/echo"), bodies=({"n": 1}, {"n": 2}), **kw)


async def test_two_processes_merge_counts_and_histograms() -> None:
    b = Behaviour(delay=0.002)
    async with http_server(b) as url:
        r = await asyncio.to_thread(run, _config(url, concurrency=4, requests=101, duration=None, procs=2))
    assert r.sent == r.ok == b.seen == 101
    assert r.ok_latency.count == 101
    assert len(r.cpu) == 2
    # Each process cycles from its own offset: both bodies were sent.
    assert {body["n"] for body in b.bodies} == {1, 2}


async def test_two_processes_share_an_open_loop_rate() -> None:
    b = Behaviour()
    seen: list[Any] = []
    async with http_server(b) as url:
        config = _config(url, rate=200.0, duration=1.0, procs=2)
        r = await asyncio.to_thread(run, config, progress=seen.append)
    assert 180 <= r.sent <= 202
    assert r.sent == r.ok
    assert seen and seen[-1].sent == r.sent


async def test_sweep_stops_at_the_first_step_over_the_objective() -> None:
    b = Behaviour(delay=0.010)
    async with http_server(b) as url:
        sweep = await asyncio.to_thread(run_sweep, _config(url, duration=0.3), [1, 4, 16], Slo(p99=0.005))
    assert [s.value for s in sweep.steps] == [1]
    assert sweep.steps[0].passed is False
    assert sweep.stopped_early and sweep.best is None
    assert sweep.to_dict()["best"] is None


async def test_sweep_reports_the_best_passing_step() -> None:
    # Each other request in flight adds 50 ms: c=1 is fast, c=4 breaks a 100 ms p99.
    b = Behaviour(delay=0.001, delay_per_inflight=0.050)
    rows: list[Any] = []
    async with http_server(b) as url:
        sweep = await asyncio.to_thread(
            lambda: run_sweep(_config(url, duration=0.4), [1, 4, 16], Slo(p99=0.100), on_step=rows.append)
        )
    assert [s.passed for s in sweep.steps] == [True, False]
    assert rows == sweep.steps
    best = sweep.best
    assert best is not None and best.value == 1
    data = sweep.to_dict()
    assert data["best"]["value"] == 1 and data["stopped_early"] is True
    assert data["steps"][1]["result"]["config"]["concurrency"] == 4


async def test_rate_sweep_without_objective_runs_every_step() -> None:
    async with http_server(Behaviour()) as url:
        sweep = await asyncio.to_thread(run_sweep, _config(url, rate=50.0, duration=0.3), [50, 100])
    assert sweep.knob == "rate"
    assert [s.passed for s in sweep.steps] == [None, None]
    assert [s.result.config["rate"] for s in sweep.steps] == [50.0, 100.0]
    assert sweep.best is sweep.steps[1]
