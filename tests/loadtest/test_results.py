"""Histograms and results: percentiles, encoding between processes, merging, JSON."""

from __future__ import annotations

import json

from loadtest import Latency, LoadResult


def _latency(ms_values: list[float]) -> Latency:
    lat = Latency()
    for ms in ms_values:
        lat.record(ms / 1000.0)
    return lat


def test_percentiles_in_ms() -> None:
    lat = _latency([float(i) for i in range(1, 1001)])  # 1..1000 ms
    assert lat.count == 1000
    assert abs((lat.p50() or 0) - 500) <= 1
    assert abs((lat.p99() or 0) - 990) <= 1
    assert abs((lat.max_ms() or 0) - 1000) <= 1
    assert Latency().p99() is None
    spectrum = lat.spectrum(points=8)
    assert spectrum[0][0] == 0.0 and spectrum[-1][0] > 99.98
    assert [ms for _, ms in spectrum] == sorted(ms for _, ms in spectrum)


def test_encoded_histograms_merge() -> None:
    a, b = _latency([1.0] * 90), _latency([100.0] * 10)
    merged = Latency.decode(a.encode())
    merged.add(Latency.decode(b.encode()))
    assert merged.count == 100
    assert abs((merged.p50() or 0) - 1.0) < 0.01
    assert abs((merged.p99() or 0) - 100.0) < 0.1
    assert Latency.decode("").count == 0


def test_results_merge_and_round_trip_through_json() -> None:
    r1 = LoadResult(
        sent=10,
        ok=8,
        errors={"http 503": 2},
        dropped=1,
        duration=1.0,
        ok_latency=_latency([5.0] * 8),
        error_latency=_latency([1.0] * 2),
        cpu=[0.5],
    )
    r2 = LoadResult(
        sent=6,
        ok=4,
        errors={"http 503": 1, "timeout": 1},
        dropped=0,
        duration=1.2,
        ok_latency=_latency([7.0] * 4),
        error_latency=_latency([1.0, 30.0]),
        cpu=[0.95],
    )
    m = LoadResult.merge([r1, r2], {"mode": "http"})
    assert (m.sent, m.ok, m.dropped) == (16, 12, 1)
    assert m.errors == {"http 503": 3, "timeout": 1}
    assert m.sent == m.ok + m.error_count
    assert m.duration == 1.2 and m.throughput == 16 / 1.2
    assert m.ok_latency.count == 12 and m.error_latency.count == 4
    assert m.saturated and any("CPU-bound" in w for w in m.warnings())
    data = json.loads(json.dumps(m.to_dict()))
    assert data["latency_ms"]["count"] == 12
    assert data["errors"] == {"http 503": 3, "timeout": 1}
    back = LoadResult.from_dict(data)
    assert (back.sent, back.ok, back.errors, back.cpu) == (m.sent, m.ok, m.errors, m.cpu)
    assert back.p99() == m.p99()
    assert back.error_latency.max_ms() == m.error_latency.max_ms()
