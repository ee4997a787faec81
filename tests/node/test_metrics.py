"""The metrics as Prometheus reads them: cumulative buckets with inclusive bounds; the in-flight and
pool saturation gauges of a real node under slow calls."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import requests
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from node.metrics import Metrics
from tests.nodeproc import NodeProc, run_node
from tests.packages import function_package


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


def _scrape(node: NodeProc) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    text = requests.get(node.http + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _gauges(node: NodeProc) -> dict[str, float]:
    """The in-flight and pool gauges of endpoints svc/slow and svc/idle (generation v1)."""
    got = _scrape(node)
    out = {"inflight": got[("apinode_inflight_requests", ())]}
    for ep in ("slow", "idle"):
        out[f"inflight {ep}"] = got[("apinode_endpoint_inflight_requests", (("endpoint", ep), ("service", "svc")))]
        pool = (("endpoint", ep), ("generation", "v1"), ("service", "svc"))
        out[f"saturation {ep}"] = got[("apinode_pool_saturation", pool)]
        out[f"queue {ep}"] = got[("apinode_queue_depth", pool)]
    out["series"] = sum(1 for name, _ in got if name == "apinode_endpoint_inflight_requests")
    return out


def test_inflight_and_saturation_gauges_under_slow_calls(tmp_path: Path) -> None:
    # Two workers out of a ceiling of four, never grown (grow_after_ms): saturation is 2/4.
    pool = {"floor": 2, "cruise": 2, "ceil": 4, "queue": 50, "grow_after_ms": 600_000}
    pkg = function_package(tmp_path, {"slow": {"function": "sleep", "pool": pool}, "idle": {"function": "echo"}})
    idle_state = {
        "inflight": 0,
        "inflight slow": 0,
        "inflight idle": 0,
        "saturation slow": 0.0,
        "saturation idle": 0.0,
        "queue slow": 0,
        "queue idle": 0,
        "series": 2,  # every served endpoint has a series, 0 when idle
    }
    with run_node(tmp_path / "data", pkg) as node:
        assert _gauges(node) == idle_state
        statuses: list[object] = []

        def http_call(s: float) -> None:
            statuses.append(requests.post(node.url("svc", "slow", "run"), json={"s": s}, timeout=60).status_code)

        def grpc_call(s: float) -> None:
            with grpc.insecure_channel(node.grpc) as ch:
                args = struct_pb2.Struct()
                args.update({"s": s})
                pbg.ApiNodeStub(ch).Run(pb.RunRequest(service="svc", endpoint="slow", arguments=args), timeout=60)
                statuses.append("OK")

        # Two long calls take both workers; three short ones then queue behind them.
        running = [threading.Thread(target=f, args=(8.0,)) for f in (http_call, grpc_call)]
        for t in running:
            t.start()
        node.wait_for(lambda: _gauges(node)["saturation slow"] == 0.5, what="two busy workers", timeout=60)
        queued = [threading.Thread(target=f, args=(0.1,)) for f in (http_call, grpc_call, http_call)]
        for t in queued:
            t.start()
        expected = {**idle_state, "inflight": 5, "inflight slow": 5, "saturation slow": 0.5, "queue slow": 3}
        node.wait_for(lambda: _gauges(node) == expected, what=f"{expected}", timeout=60)
        for t in running + queued:
            t.join(60)
        assert sorted(map(str, statuses)) == ["200"] * 3 + ["OK"] * 2
        node.wait_for(lambda: _gauges(node) == idle_state, what="the gauges back to 0")
        # Refused and unknown calls leave nothing counted, and made-up names get no series.
        assert requests.post(node.url("svc", "nope", "run"), json={}, timeout=10).status_code == 404
        assert requests.post(node.url("other", "e", "run"), json={}, timeout=10).status_code == 404
        assert requests.post(node.url("svc", "slow", "predict"), json={}, timeout=10).status_code == 400
        assert _gauges(node) == idle_state
