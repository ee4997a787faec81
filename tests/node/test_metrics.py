"""The request metrics as Prometheus reads them: cumulative buckets with inclusive bounds."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import Metrics


class _NoPools:
    pools: dict[str, object] = {}


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    m = Metrics(_NoPools())
    for seconds in (0.0002, 0.0003, 0.001, 7.0, 100.0):  # on a bound, between, far past the last
        m.observe("svc", "ep", "v1", "http", "ok", seconds, wait_us=100, compute_us=2000)
    m.observe("svc", "ep", "v1", "grpc", "BAD_REQUEST", 0.004)
    got = _samples(m)

    def bucket(le: str) -> float:
        labels = (("endpoint", "ep"), ("le", le), ("protocol", "http"), ("service", "svc"))
        return got[("apinode_request_duration_seconds_bucket", labels)]

    assert [bucket(le) for le in ("0.0002", "0.0005", "0.001", "5.0", "10.0", "30.0", "+Inf")] == [1, 2, 3, 3, 4, 4, 5]
    http = (("endpoint", "ep"), ("protocol", "http"), ("service", "svc"))
    assert got[("apinode_request_duration_seconds_count", http)] == 5
    assert abs(got[("apinode_request_duration_seconds_sum", http)] - 107.0015) < 1e-9
    ok = (("endpoint", "ep"), ("generation", "v1"), ("outcome", "ok"), ("protocol", "http"), ("service", "svc"))
    bad = (
        ("endpoint", "ep"),
        ("generation", "v1"),
        ("outcome", "BAD_REQUEST"),
        ("protocol", "grpc"),
        ("service", "svc"),
    )
    assert got[("apinode_requests_total", ok)] == 5 and got[("apinode_requests_total", bad)] == 1
    wait = (("endpoint", "ep"), ("le", "0.0002"), ("service", "svc"))
    assert got[("apinode_queue_wait_seconds_bucket", wait)] == 5  # 100 µs each; the error had no wait
