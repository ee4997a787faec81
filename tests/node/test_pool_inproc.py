"""The pool in-process: its real queue, dispatch, batching, timers, crash accounting and
node-wide slots, against workers running the real worker loop and protocol in threads
(tests/node/fakeworker.py). Milliseconds per test; kill -9, signals and the CLI stay
with the subprocess tests (test_supervisor.py, test_worker_faults.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node import errors
from node.supervisor.lag import LagMonitor
from node.supervisor.pool import Pool, PoolContext
from node.supervisor.poolkey import PoolKey
from node.supervisor.settings import PoolSettings
from node.supervisor.slots import Slots
from node.worker import protocol as p
from tests.node.fakeworker import Die, ThreadLauncher, ThreadWorker

DEADLINE_S = 30.0  # generous: the machine is shared; nothing here asserts a duration


class Behaviour:
    """What the test's workers do, shared by all of a pool's workers (threads)."""

    def __init__(self) -> None:
        self.gate = threading.Event()  # requests asking for it wait until it is set
        self.gate.set()
        self.batches: list[int] = []  # rows per prediction run
        self.die_on_load = False
        self.loads = 0
        self.run_s = 0.0  # how long each prediction run takes


class FunctionRuntime:
    """`{"echo": x}` -> x; `{"sleep": s}` sleeps (until killed); `{"die": code}` ends the
    worker; `{"big": n}` answers n bytes; `{"gate": 1}` waits for the gate; `{"garbage": 1}`
    writes a frame header over the limit."""

    def __init__(self, b: Behaviour, worker: ThreadWorker) -> None:
        self.b, self.worker = b, worker

    def handle(self, op: str, payload: Any) -> Any:
        assert op == p.OP_CALL
        if "gate" in payload:
            self.b.gate.wait(DEADLINE_S)
        if "sleep" in payload:
            self.worker.killed.wait(payload["sleep"])
        if "die" in payload:
            raise Die(payload["die"])
        if "big" in payload:
            return "x" * payload["big"]
        if "garbage" in payload:
            self.worker.data.sendall(p.HEADER.pack(p.MAX_FRAME + 1))
            self.worker.killed.wait(DEADLINE_S)
        if "fail" in payload:
            raise p.WorkerError(p.ERR_USER, f"ValueError: {payload['fail']}")
        return payload.get("echo")

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake-function"}


class PredictionRuntime:
    """Rows of one number -> their doubles, as a regression's `(values,)`; a row "gate"
    waits for the gate. Records the rows of each run."""

    def __init__(self, b: Behaviour, worker: ThreadWorker) -> None:
        self.b = b

    def handle(self, op: str, payload: Any) -> Any:
        assert op == p.OP_PREDICT
        if ["gate"] in payload:
            self.b.gate.wait(DEADLINE_S)
        self.b.batches.append(len(payload))
        if self.b.run_s:
            time.sleep(self.b.run_s)
        return ([0.0 if r == ["gate"] else r[0] * 2 for r in payload],)

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake-prediction"}


def factory(b: Behaviour, cls: type[FunctionRuntime] | type[PredictionRuntime]) -> Any:
    def make(spec: Any, worker: ThreadWorker) -> Any:
        b.loads += 1
        if b.die_on_load:
            raise Die(1)
        return cls(b, worker)

    return make


async def make_pool(
    b: Behaviour,
    *,
    batchable: bool = False,
    slots: Slots | None = None,
    max_frame: int = p.MAX_FRAME,
    endpoint: str = "ep",
    queue_target: float = 0.0,
    **settings: Any,
) -> Pool:
    cls = PredictionRuntime if batchable else FunctionRuntime
    node = PoolContext(
        slots or Slots(),
        LagMonitor(0),
        launch=ThreadLauncher(factory(b, cls)),
        max_frame=max_frame,
        queue_target=queue_target,
    )
    s = PoolSettings(**{"floor": 1, "cruise": 1, "ceil": 1, **settings})
    pool = Pool(
        PoolKey("svc", endpoint, "v1"),
        {},
        s,
        node,
        op=p.OP_PREDICT if batchable else p.OP_CALL,
        batchable=batchable,
    )
    await pool.start()
    return pool


async def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def queued(pool: Pool, calls: list[Awaitable[Any]], n: int) -> list[asyncio.Task[Any]]:
    """Submits `calls` as tasks and waits until `n` of them are queued."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    await until(lambda: pool.waiting == n, f"{n} queued requests")
    return tasks


async def test_a_request_and_its_answer_travel_the_real_protocol() -> None:
    pool = await make_pool(Behaviour())
    out = await pool.submit({"echo": {"a": [1, 2.5, None]}})
    assert out.result == {"a": [1, 2.5, None]} and out.batch_rows == 1
    with pytest.raises(errors.UserCodeError, match="ValueError: no"):
        await pool.submit({"fail": "no"})
    assert (pool.stats.served, pool.stats.failed, pool.stats.crashed) == (1, 1, 0)
    await pool.close(drain=True)
    assert pool.held == 0


async def test_max_run_ms_kills_the_worker_fails_with_run_timeout_and_replaces_it() -> None:
    pool = await make_pool(Behaviour(), max_run_ms=50)
    (first,) = pool.pids()
    with pytest.raises(errors.RunTimeout, match="run time limit of 50 ms"):
        await pool.submit({"sleep": DEADLINE_S})
    await until(lambda: pool.live == 1 and pool.pids() != [first], "a replacement worker")
    assert (await pool.submit({"echo": 1})).result == 1
    s = pool.stats
    assert (s.run_timeouts, s.restarts, s.crashed, s.failed) == (1, 1, 0, 1)
    assert pool.scaling.consecutive_crashes == 0 and pool.last_error is None
    await pool.close(drain=False)


async def test_queued_requests_go_to_the_worker_in_one_message() -> None:
    b = Behaviour()
    pool = await make_pool(b, batchable=True)
    b.gate.clear()
    blocker = asyncio.ensure_future(pool.submit([["gate"]], 1))
    await until(lambda: pool.busy == 1, "the worker busy")
    sizes = [1, 3, 2, 1]
    calls = [pool.submit([[float(10 * i + j)] for j in range(n)], n) for i, n in enumerate(sizes)]
    tasks = await queued(pool, calls, len(sizes))
    assert pool.waiting_rows == sum(sizes)
    b.gate.set()
    outs = await asyncio.gather(*tasks)
    await blocker
    assert b.batches == [1, sum(sizes)]  # the gate alone, then every queued request in one run
    for i, (n, out) in enumerate(zip(sizes, outs, strict=True)):
        assert out.result == ([2.0 * (10 * i + j) for j in range(n)],)  # each caller its own rows
        assert out.batch_rows == sum(sizes)
    assert (pool.stats.batches, pool.stats.batched_rows, pool.stats.served) == (1, sum(sizes), 5)
    await pool.close(drain=False)


async def test_a_batch_takes_whole_requests_up_to_max_batch_rows() -> None:
    b = Behaviour()
    pool = await make_pool(b, batchable=True, max_batch=4)
    b.gate.clear()
    blocker = asyncio.ensure_future(pool.submit([["gate"]], 1))
    await until(lambda: pool.busy == 1, "the worker busy")
    sizes = [2, 1, 3, 2]  # 2+1 fit in 4, 3 would not; then 3, then 2
    tasks = await queued(pool, [pool.submit([[1.0]] * n, n) for n in sizes], len(sizes))
    b.gate.set()
    await asyncio.gather(blocker, *tasks)
    assert b.batches == [1, 3, 3, 2]
    await pool.close(drain=False)


async def test_a_request_waiting_past_the_timeout_gets_queue_timeout() -> None:
    b = Behaviour()
    pool = await make_pool(b, timeout=50)
    b.gate.clear()
    blocker = asyncio.ensure_future(pool.submit({"gate": 1}))
    await until(lambda: pool.busy == 1, "the worker busy")
    with pytest.raises(errors.QueueTimeout, match="waited 50 ms in the queue of svc/ep@v1"):
        await pool.submit({"echo": 1})
    assert pool.stats.timed_out == 1 and pool.waiting == 0
    b.gate.set()
    await blocker
    await pool.close(drain=False)


async def test_a_full_queue_refuses_at_once() -> None:
    b = Behaviour()
    pool = await make_pool(b, queue=2)
    b.gate.clear()
    tasks = [asyncio.ensure_future(pool.submit({"gate": 1}))]
    await until(lambda: pool.busy == 1, "the worker busy")
    tasks += await queued(pool, [pool.submit({"echo": i}) for i in range(2)], 2)
    with pytest.raises(errors.Overloaded, match="1 workers busy and 2 requests queued"):
        pool.refuse_if_full()
    assert pool.stats.rejected == 1
    b.gate.set()
    assert [(await t).result for t in tasks] == [None, 0, 1]
    await pool.close(drain=False)


async def test_a_crash_fails_only_its_request_and_is_replaced_at_once() -> None:
    b = Behaviour()
    pool = await make_pool(b)
    (first,) = pool.pids()
    with pytest.raises(errors.WorkerCrashed, match=r"crashed \(exited with code 7\) while running this request"):
        await pool.submit({"die": 7})
    assert pool.stats.crashed == 1 and pool.scaling.consecutive_crashes == 1
    assert "exited with code 7" in (pool.last_error or "")
    assert pool.ready  # a replacement is starting: one crash is not an outage
    assert (await pool.submit({"echo": 2})).result == 2  # waits for the replacement
    assert pool.pids() != [first] and pool.stats.restarts == 1
    assert pool.scaling.consecutive_crashes == 0  # it served
    await pool.close(drain=False)


async def test_crashes_in_a_row_back_off_refuse_and_recover() -> None:
    b = Behaviour()
    pool = await make_pool(b)
    b.die_on_load = True  # every replacement dies before serving: a crash loop
    with pytest.raises(errors.WorkerCrashed):
        await pool.submit({"die": 1})
    await until(lambda: pool.scaling.consecutive_crashes >= 3, "three crashes in a row")
    assert not pool.ready
    with pytest.raises(errors.NotReady, match="is not ready: no live worker"):
        pool.refuse_if_full()
    crashes = pool.stats.crashed
    assert crashes >= 3 and pool.scaling.backoff_until > 0
    b.die_on_load = False
    await until(lambda: pool.ready, "a replacement that loads")
    assert (await pool.submit({"echo": 3})).result == 3
    assert pool.scaling.consecutive_crashes == 0
    await pool.close(drain=False)


async def test_the_node_wide_cap_holds_growth_and_grants_freed_slots() -> None:
    slots = Slots(max_workers=2)
    b = Behaviour()
    a = await make_pool(b, slots=slots, endpoint="a", ceil=4, cruise=1)
    other = await make_pool(Behaviour(), slots=slots, endpoint="b", ceil=4)
    assert slots.taken == 2
    b.gate.clear()
    tasks = [asyncio.ensure_future(a.submit({"gate": 1})) for _ in range(3)]
    await until(lambda: a.busy == 1 and a.waiting == 2, "one running, two queued")
    assert a.size == 1 and slots.taken == 2  # held at the cap: it waits in line for a slot
    await other.close(drain=True)
    await until(lambda: a.size == 2, "the freed slot granted to the waiting pool")
    assert slots.taken == 2
    b.gate.set()
    await asyncio.gather(*tasks)
    await a.close(drain=False)
    assert slots.taken == 0


async def test_a_pool_over_its_share_gives_a_worker_back_to_a_starved_one() -> None:
    slots = Slots(max_workers=4)
    ba, bb = Behaviour(), Behaviour()
    a = await make_pool(ba, slots=slots, endpoint="a", ceil=4, cruise=1)
    other = await make_pool(bb, slots=slots, endpoint="b", ceil=4, cruise=1)
    ba.gate.clear()
    bb.gate.clear()
    ta = [asyncio.ensure_future(a.submit({"gate": 1})) for _ in range(3)]
    await until(lambda: a.busy == 3, "a grown to 3 busy workers")
    tb = [asyncio.ensure_future(other.submit({"gate": 1})) for _ in range(3)]
    await until(lambda: other.busy == 1 and other.waiting == 2, "b starved at the cap")
    assert slots.taken == 4 and other.size == 1
    ba.gate.set()  # a's workers free up with nothing queued: one is given back
    await asyncio.gather(*ta)
    await until(lambda: other.size == 2, "b granted the slot a gave back")
    assert a.size == 2 and slots.taken <= 4
    bb.gate.set()
    await asyncio.gather(*tb)
    await asyncio.gather(a.close(drain=False), other.close(drain=False))


async def test_an_idle_worker_above_cruise_retires_after_its_grace() -> None:
    b = Behaviour()
    pool = await make_pool(b, ceil=2, cruise=1, idle_grace_ms=0)
    b.gate.clear()
    tasks = [asyncio.ensure_future(pool.submit({"gate": 1})) for _ in range(2)]
    await until(lambda: pool.busy == 2, "grown to 2 busy workers")
    b.gate.set()
    await asyncio.gather(*tasks)
    pool.tick(time.monotonic())
    await until(lambda: pool.held == 1, "one worker retired")
    pool.tick(time.monotonic())  # at cruise: no more
    assert pool.size == 1 and pool.stats.crashed == 0
    await pool.close(drain=False)


async def test_a_request_too_big_for_a_frame_is_413_and_the_worker_lives_on() -> None:
    pool = await make_pool(Behaviour(), max_frame=2000)
    pids = pool.pids()
    with pytest.raises(errors.PayloadTooLarge, match="over the frame limit of 2000 bytes") as info:
        await pool.submit({"echo": "x" * 5000})
    assert errors.kind_of(info.value).http_status == 413
    assert (await pool.submit({"echo": "fits"})).result == "fits"
    assert pool.pids() == pids and pool.stats.crashed == 0
    await pool.close(drain=False)


async def test_a_result_too_big_for_a_frame_fails_its_request_not_the_worker() -> None:
    pool = await make_pool(Behaviour(), max_frame=2000)
    pids = pool.pids()
    with pytest.raises(errors.InternalError, match=r"the worker's answer is .* over the frame limit of 2000 bytes"):
        await pool.submit({"big": 5000})
    assert (await pool.submit({"big": 10})).result == "x" * 10
    assert pool.pids() == pids and pool.stats.crashed == 0
    await pool.close(drain=False)


async def test_a_batch_too_big_for_a_frame_is_split_into_requests_that_fit() -> None:
    b = Behaviour()
    pool = await make_pool(b, batchable=True, max_frame=1000)
    b.gate.clear()
    blocker = asyncio.ensure_future(pool.submit([["gate"]], 1))
    await until(lambda: pool.busy == 1, "the worker busy")
    rows = [[float(i)] + [i + j / 1000 for j in range(70)] for i in range(3)]
    p.encode(p.Request(1, p.OP_PREDICT, rows[:1]), 1000)  # one fits in a frame
    with pytest.raises(p.FrameTooLarge):
        p.encode(p.Request(1, p.OP_PREDICT, rows[:2]), 1000)  # two do not
    tasks = await queued(pool, [pool.submit([r], 1) for r in rows], 3)
    b.gate.set()
    outs = await asyncio.gather(*tasks)
    await blocker
    assert [o.result for o in outs] == [([float(2 * i)],) for i in range(3)]
    assert b.batches == [1, 1, 1, 1]
    await pool.close(drain=False)


async def test_a_worker_sending_an_oversized_frame_is_killed() -> None:
    pool = await make_pool(Behaviour())
    with pytest.raises(errors.WorkerCrashed, match="was killed: sent a frame of"):
        await pool.submit({"garbage": 1})
    dead = [w for w in pool.node.launch.workers if w.returncode is not None]  # type: ignore[attr-defined]
    assert len(dead) == 1
    await until(lambda: pool.live == 1, "a replacement")
    assert pool.stats.crashed == 1
    await pool.close(drain=False)


async def _open_loop(pool: Pool, seconds: float, every_s: float) -> tuple[int, list[str], int]:
    """One row every `every_s` for `seconds`, whatever the answers: (served, refusals'
    messages, the most rows queued at any admission once the queue stood)."""
    served, refused, most = 0, [], 0

    async def one() -> None:
        nonlocal served, most
        try:
            pool.refuse_if_full()
            if pool.standing:
                most = max(most, pool.waiting_rows)
            await pool.submit([[1.0]], 1)
            served += 1
        except errors.Overloaded as exc:
            refused.append(exc.message)

    tasks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(every_s)
    await asyncio.gather(*tasks)
    return served, refused, most


async def test_a_standing_queue_holds_one_batch_per_worker_and_refuses_the_rest() -> None:
    """Open loop at several times what the worker drains: with a queue target the queue
    stands, holds at most one batch, and the excess is refused at once; the same load
    without one queues up to the count bound and refuses nothing."""
    b = Behaviour()
    b.run_s = 0.02  # 8 rows per 20 ms run: 400 rows/s at most
    pool = await make_pool(b, batchable=True, max_batch=8, queue=100, timeout=20_000, queue_target=0.005)
    served, refused, most = await _open_loop(pool, 1.0, 0.001)  # ~1,000 rows/s offered
    assert refused and served, (served, len(refused))
    assert all("workers busy" in m for m in refused)
    assert most <= 8, most  # while standing: one batch (one worker) waits, no more
    assert pool.stats.rejected == len(refused)
    await until(lambda: pool.idle and not pool.standing, "the queue drained, no longer standing")
    await pool.close(drain=False)

    b2 = Behaviour()
    b2.run_s = 0.02
    off = await make_pool(b2, batchable=True, max_batch=8, queue=100, timeout=20_000, queue_target=0.0)
    served, refused, _ = await _open_loop(off, 0.5, 0.001)
    assert refused == [] and not off.standing
    await off.close(drain=False)


async def test_a_closed_loop_of_64_callers_never_stands_in_the_way() -> None:
    """64 callers, each sending again as soon as it is answered, on one worker, with the
    default pool settings and a 10 ms target: every call is served."""
    b = Behaviour()
    b.run_s = 0.01
    pool = await make_pool(b, batchable=True, queue_target=0.01, **{"ceil": 1})
    refused = 0

    async def caller() -> None:
        nonlocal refused
        for _ in range(20):
            try:
                await pool.submit([[1.0]], 1)
            except errors.Overloaded:
                refused += 1

    await asyncio.gather(*(caller() for _ in range(64)))
    assert refused == 0 and pool.stats.served == 64 * 20
    await pool.close(drain=False)


async def test_while_the_queue_stands_the_front_lets_in_two_batches_per_worker() -> None:
    b = Behaviour()
    pool = await make_pool(b, batchable=True, max_batch=4, queue_target=0.005)
    assert pool.front_overload() is None  # not standing: the front is not held
    pool.standing = True  # as the standing test sets it (test above)
    for _ in range(8):  # one worker: 2 x 4 requests
        assert pool.front_overload() is None
        pool.front_admitted += 1
    refusal = pool.front_overload()
    assert refusal is not None and "8 requests in the node" in refusal.message
    pool.front_done()
    assert pool.front_overload() is None and pool.front_admitted == 7
    await pool.close(drain=False)
