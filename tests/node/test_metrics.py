"""The metrics as Prometheus reads them: cumulative buckets with inclusive bounds; the in-flight and
pool saturation gauges of a real node under slow calls."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import grpc
import requests
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

# Triton's OIP stubs: a client's view (node._proto.inference keeps its own descriptor pool, so both load)
from tritonclient.grpc import service_pb2 as oip
from tritonclient.grpc import service_pb2_grpc as oipg

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from node.metrics import Metrics
from tests.inproc import InProcNode, run_node
from tests.packages import function_package, logistic_package


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


def _scrape(node: InProcNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    text = requests.get(node.http + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _gauges(node: InProcNode) -> dict[str, float]:
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


def test_inflight_gauge_counts_streams_and_oip(tmp_path: Path) -> None:
    """A prediction endpoint's one worker stopped (SIGSTOP, a real stall): a gRPC stream message
    and OIP calls over HTTP and gRPC stay in flight until it resumes."""
    pkg, _ = logistic_package(tmp_path)
    config = tmp_path / "data" / "config" / "services" / "fraud" / "score.json"
    config.parent.mkdir(parents=True)
    config.write_text('{"pool": {"floor": 1, "cruise": 1, "ceil": 1}}')
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        ep = (("endpoint", "score"), ("service", "fraud"))
        pool = (ep[0], ("generation", "v1"), ep[1])

        def gauges() -> tuple[float, float, float, float]:
            got = _scrape(node)
            return (
                got[("apinode_inflight_requests", ())],
                got[("apinode_endpoint_inflight_requests", ep)],
                got[("apinode_pool_saturation", pool)],
                got[("apinode_queue_depth", pool)],
            )

        assert gauges() == (0, 0, 0.0, 0)
        [worker] = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)
        done: list[str] = []
        features = {"amount": 1.0, "hour": 3.0, "distance": 0.5}

        def stream() -> None:
            with grpc.insecure_channel(node.grpc) as ch:
                req = pb.PredictRequest(
                    service="fraud", endpoint="score", features={k: pb.Value(number=v) for k, v in features.items()}
                )
                for answer in pbg.ApiNodeStub(ch).PredictStream(iter([req]), timeout=120):
                    done.append(f"stream {answer.error.error_type or 'OK'}")

        def oip_http() -> None:
            body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 3.0, 0.5]}]}
            r = requests.post(f"{node.http}/v2/models/fraud.score/infer", json=body, timeout=120)
            done.append(f"oip-http {r.status_code}")

        def oip_grpc() -> None:
            with grpc.insecure_channel(node.grpc) as ch:
                t = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=[1, 3])
                t.contents.fp64_contents.extend([1.0, 3.0, 0.5])
                oipg.GRPCInferenceServiceStub(ch).ModelInfer(
                    oip.ModelInferRequest(model_name="fraud.score", inputs=[t]), timeout=120
                )
                done.append("oip-grpc OK")

        threads = [threading.Thread(target=f) for f in (stream, oip_http, oip_grpc)]
        try:
            for t in threads:
                t.start()
            # one call went to the stopped worker (busy: saturation 1/1), two wait in the queue
            node.wait_for(lambda: gauges() == (3, 3, 1.0, 2), what="three calls in flight", timeout=60)
        finally:
            os.kill(worker, signal.SIGCONT)
        for t in threads:
            t.join(120)
        assert sorted(done) == ["oip-grpc OK", "oip-http 200", "stream OK"]
        node.wait_for(lambda: gauges() == (0, 0, 0.0, 0), what="the gauges back to 0")
