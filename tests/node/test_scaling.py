"""The scaling policy alone: plain numbers in, decisions out (node/supervisor/scaling.py)."""

from __future__ import annotations

from node.supervisor.poolkey import PoolKey
from node.supervisor.scaling import MAX_BACKOFF_S, Scaling
from node.supervisor.settings import PoolSettings


def test_growth_covers_waiting_requests_up_to_ceil_and_not_while_the_only_worker_starts() -> None:
    s = Scaling(PoolSettings(floor=1, cruise=1, ceil=4), batching=False)
    assert s.growth(0.0, waiting=3, starting=0, live=1, size=1) == 3
    assert s.growth(0.0, waiting=9, starting=1, live=1, size=2) == 2  # up to ceil
    assert s.growth(0.0, waiting=3, starting=2, live=1, size=3) == 1  # starting ones count
    assert s.growth(0.0, waiting=3, starting=1, live=0, size=1) == 0  # the gap, not the load
    assert s.growth(0.0, waiting=0, starting=0, live=1, size=1) == 0


def test_grow_after_defaults_by_kind_and_follows_new_settings() -> None:
    assert Scaling(PoolSettings(), batching=False).grow_after == 0
    batching = Scaling(PoolSettings(), batching=True)
    assert batching.grow_after == 0.01
    assert batching.grow_delay(0.004) == 0.006 and batching.grow_delay(0.02) == 0
    batching.apply(PoolSettings(grow_after_ms=50))
    assert batching.grow_after == 0.05


def test_crashes_in_a_row_back_off_exponentially_and_a_served_request_resets() -> None:
    s = Scaling(PoolSettings(), batching=False)
    # each replacement dies before serving: a crash loop
    delays = [s.crashed(100.0, served_any=False, epoch=s.crash_epoch) for _ in range(8)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert s.crash_looping and s.backing_off(100.0 + 6.3) and not s.backing_off(100.0 + 6.5)
    assert s.growth(100.0, waiting=5, starting=0, live=1, size=1) == 0  # no growth while backing off
    for _ in range(3):
        s.crashed(200.0, served_any=False, epoch=s.crash_epoch)
    assert s.backoff_until == 200.0 + MAX_BACKOFF_S
    assert not s.replacing(served_once=True, coming=1)  # repeated crashes are an outage
    s.served()
    assert not s.crash_looping and s.replacing(served_once=True, coming=1)


def test_a_worker_that_had_served_or_started_before_the_last_crash_starts_a_new_count() -> None:
    s = Scaling(PoolSettings(), batching=False)
    old_epoch = s.crash_epoch
    s.crashed(0.0, served_any=False, epoch=old_epoch)
    s.crashed(0.0, served_any=False, epoch=old_epoch)  # a sibling started before the first crash
    assert s.consecutive_crashes == 1
    s.crashed(0.0, served_any=True, epoch=s.crash_epoch)  # it had served
    assert s.consecutive_crashes == 1
    assert s.spawn_failed(0.0) == 0.1 and s.consecutive_crashes == 2


def test_idle_workers_retire_one_at_a_time_above_cruise_or_floor_when_parked() -> None:
    s = Scaling(PoolSettings(floor=1, cruise=2, ceil=4, idle_grace_ms=1000), batching=False)
    assert s.retire_idle(10.0, waiting=0, size=3, idle_since=8.0)
    assert not s.retire_idle(10.0, waiting=0, size=3, idle_since=9.5)  # within its grace
    assert not s.retire_idle(10.0, waiting=1, size=3, idle_since=8.0)  # requests wait
    assert not s.retire_idle(10.0, waiting=0, size=2, idle_since=8.0)  # at cruise
    s.parked = True
    assert s.retire_idle(10.0, waiting=0, size=2, idle_since=8.0)  # parked: down to floor
    assert s.missing(0) == 1 and s.over_ceil(6) == 2


def test_pool_keys_print_as_before_and_name_their_endpoint() -> None:
    key = PoolKey("fraud", "score", "v3")
    assert str(key) == "fraud/score@v3" and key.endpoint_id == "score"
    again = PoolKey("fraud", "score", "v3", instance=2)
    assert str(again.enrichment(0)) == "fraud/score@v3~2#enrich0"
    assert again.enrichment(0).endpoint_id == "score.enrich0"
    assert {key: 1}[PoolKey("fraud", "score", "v3")] == 1 and key != again
