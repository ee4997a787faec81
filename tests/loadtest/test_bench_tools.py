"""The external generators of `make bench` (wrk, h2load) and the gRPC bodies h2load sends,
against real servers. These check that the tools are driven and read right, not speeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from loadtest import bench_tools as tools
from loadtest.config import Target
from loadtest.grpc_messages import encode_bodies, method_path
from tests.loadtest.servers import Behaviour, grpc_server, http_server

BODY = {"features": {"amount": 12.5, "country": "FR"}}
TARGET = Target(mode="grpc", service="svc", endpoint="ep")


def test_a_grpc_frame_is_a_zero_byte_a_length_and_the_message() -> None:
    (msg,) = encode_bodies(TARGET, [BODY])
    frame = tools.grpc_frame([msg, msg])
    assert frame[:5] == b"\x00" + len(msg).to_bytes(4, "big")
    assert frame[5 : 5 + len(msg)] == msg
    assert len(frame) == 2 * (5 + len(msg))


async def test_verify_grpc_accepts_a_sound_body_and_names_a_bad_one() -> None:
    b = Behaviour(fail_every=2)
    msgs = encode_bodies(TARGET, [BODY] * 3, stream=True)
    async with grpc_server(b) as address:
        ok = await asyncio.to_thread(tools.verify_grpc, address, method_path("Predict"), msgs[:1])
        failed = await asyncio.to_thread(tools.verify_grpc, address, method_path("Predict"), msgs[:1])
        stream = await asyncio.to_thread(tools.verify_grpc, address, method_path("PredictStream"), msgs)
    assert ok is None
    assert failed is not None and "RESOURCE_EXHAUSTED" in failed
    assert stream is not None and "with an error" in stream  # the 2nd of 3 answers failed


async def test_h2load_drives_grpc_unary_and_reads_its_log(tmp_path: Path) -> None:
    b = Behaviour()
    msgs = encode_bodies(TARGET, [BODY])
    async with grpc_server(b) as address:
        run = await asyncio.to_thread(
            tools.h2load,
            address,
            method_path("Predict"),
            tools.grpc_frame(msgs),
            clients=1,
            streams=4,
            duration=1.0,
            warmup=0.0,
            work=tmp_path,
        )
    assert run.failed is None, run.failed
    assert run.ok > 0 and not run.errors
    assert b.seen >= run.ok  # every success was a real call the servicer answered
    assert run.p50_ms is not None and run.p99_ms is not None and run.p50_ms <= run.p99_ms


async def test_wrk_posts_the_body_and_counts_non_2xx(tmp_path: Path) -> None:
    b = Behaviour(fail_every=2)
    async with http_server(b) as url:
        run = await asyncio.to_thread(
            tools.wrk,
            f"{url}/public/api/v1/svc/ep/predict",
            orjson.dumps(BODY),
            concurrency=2,
            duration=1.0,
            work=tmp_path,
        )
    assert run.failed is None, run.failed
    assert b.bodies[0] == BODY
    assert run.ok > 0 and run.errors.get("non-2xx", 0) > 0
    assert run.p50_ms is not None and run.p99_ms is not None
