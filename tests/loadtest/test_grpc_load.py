"""The load loops over gRPC (unary Predict and PredictStream), against a real grpc.aio server."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import ConfigError, LoadConfig, LoadResult, Target, run_load
from loadtest.grpc_messages import encode_bodies, to_value
from node._proto.apinode.v1 import apinode_pb2 as pb
from tests.loadtest.servers import Behaviour, grpc_server

BODIES = (
    {"features": {"amount": 12.5, "n": 3, "country": "FR", "vip": True, "age": None}},
    {"features": {"amount": 1.0, "n": 4, "country": "DE", "vip": False, "age": 40}},
)


def _config(address: str, mode: str = "grpc", api_key: str | None = None, **kw: Any) -> LoadConfig:
    target = Target(mode=mode, grpc=address, service="svc", endpoint="ep", api_key=api_key)  # type: ignore[arg-type]
    return LoadConfig(target=target, bodies=BODIES, **kw)


def _adds_up(r: LoadResult) -> None:
    assert r.sent == r.ok + r.error_count
    assert r.ok_latency.count == r.ok
    assert r.error_latency.count == r.error_count


@pytest.mark.parametrize("mode", ["grpc", "grpc-stream"])
async def test_delay_is_measured(mode: str) -> None:
    b = Behaviour(delay=0.020)
    async with grpc_server(b) as address:
        r = await run_load(_config(address, mode, concurrency=4, duration=1.0))
    _adds_up(r)
    assert r.error_count == 0
    assert r.sent == b.seen
    assert 20.0 <= (r.ok_latency.p50() or 0) <= 30.0
    assert 50 <= r.ok <= 200


@pytest.mark.parametrize("mode", ["grpc", "grpc-stream"])
async def test_features_arrive_typed(mode: str) -> None:
    b = Behaviour()
    async with grpc_server(b) as address:
        r = await run_load(_config(address, mode, requests=4, duration=None))
    assert r.ok == 4
    first = b.bodies[0]
    assert (first.service, first.endpoint) == ("svc", "ep")
    f = first.features
    assert f["amount"].number == 12.5 and f["n"].integer == 3 and f["country"].text == "FR"
    assert f["vip"].flag is True and f["age"].WhichOneof("kind") == "null"
    if mode == "grpc-stream":
        assert [m.request_id for m in b.bodies] == ["0", "1", "0", "1"]


async def test_unary_errors_are_keyed_by_status_code() -> None:
    b = Behaviour(fail_every=5)
    async with grpc_server(b) as address:
        r = await run_load(_config(address, concurrency=2, requests=100, duration=None))
    _adds_up(r)
    assert r.errors == {"grpc RESOURCE_EXHAUSTED": 20}


async def test_stream_error_responses_are_errors() -> None:
    b = Behaviour(fail_every=5)
    async with grpc_server(b) as address:
        r = await run_load(_config(address, "grpc-stream", concurrency=2, requests=100, duration=None))
    _adds_up(r)
    assert r.errors == {"grpc RESOURCE_EXHAUSTED": 20}
    assert r.ok == 80


@pytest.mark.parametrize("mode", ["grpc", "grpc-stream"])
async def test_api_key_goes_as_bearer_metadata(mode: str) -> None:
    b = Behaviour(api_key="k1")
    async with grpc_server(b) as address:
        good = await run_load(_config(address, mode, api_key="k1", requests=3, duration=None))
        bad = await run_load(_config(address, mode, api_key="k2", requests=3, duration=None))
    assert good.ok == 3
    assert bad.ok == 0 and bad.errors == {"grpc UNAUTHENTICATED": 3}


async def test_stream_open_loop_pipelines_on_one_stream() -> None:
    b = Behaviour(delay=0.001)
    async with grpc_server(b) as address:
        r = await run_load(_config(address, "grpc-stream", rate=300.0, duration=0.5))
    _adds_up(r)
    assert r.error_count == 0
    assert 140 <= r.ok <= 151


async def test_unreachable_server_counts_unavailable() -> None:
    async with grpc_server(Behaviour()) as address:
        pass
    r = await run_load(_config(address, requests=3, duration=None, timeout=2.0))
    assert r.errors == {"grpc UNAVAILABLE": 3}


def test_bodies_encode_to_typed_messages() -> None:
    target = Target(mode="grpc", service="s", endpoint="e", verb="predict")
    raw = encode_bodies(target, [{"features": {"x": 1}, "dispatch": {"forcedGeneration": "v2"}, "context": {"a": 1}}])
    msg = pb.PredictRequest.FromString(raw[0])
    assert msg.dispatch.forced_generation == "v2"
    assert msg.context["a"] == 1
    multi = encode_bodies(
        Target(mode="grpc", service="s", endpoint="e", verb="predict-multi"),
        [{"items": [{"features": {"x": 1}}, {"features": {"x": 2}}]}],
    )
    assert len(pb.PredictMultiRequest.FromString(multi[0]).items) == 2
    run_ = encode_bodies(Target(mode="grpc", service="s", endpoint="e", verb="run"), [{"a": [1, 2]}])
    assert list(pb.RunRequest.FromString(run_[0]).arguments["a"]) == [1, 2]
    assert to_value(2**70).text == str(2**70)  # exact, as the JSON API reads the number
    with pytest.raises(ConfigError, match="feature must be"):
        encode_bodies(target, [{"features": {"x": [1]}}])
