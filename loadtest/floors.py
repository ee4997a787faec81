"""The floors `make bench` compares apinode to: the same ONNX model served in-process.

    python -m loadtest.floors http|grpc|http503|grpc503 PACKAGE ENDPOINT PORTS_FILE

A bare aiohttp handler (or a bare grpc.aio `ApiNode.Predict`, and a bare grpc.aio
bidirectional `ApiNode.PredictStream` answering each message in turn) that validates the features
with the node's own :class:`~node.features.FeatureCodec`, runs the node's own
:class:`~node.worker.runtime.PredictionRuntime` in the same process, and answers the same
JSON/protobuf. What apinode adds on top (worker processes, queues, supervision, metrics)
is exactly the difference the benchmark reports as a ratio.

The refusal floors (``http503``, ``grpc503``) answer every call as a full node does, and no
more: a bare aiohttp handler returning a 503 with the node's OVERLOADED JSON and a
Retry-After header, a bare grpc.aio `Predict` aborting with RESOURCE_EXHAUSTED. They are
what a refusal costs at the least in the same server framework on the same core
(:mod:`loadtest.bench_refuse`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import uvloop
from aiohttp import web

from apz.archive import extract_package
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from node.features import FeatureCodec
from node.grpc.values import py_to_value, value_to_py
from node.worker.runtime import PredictionRuntime


def _load(package: Path, endpoint: str) -> tuple[FeatureCodec, PredictionRuntime, dict[str, str]]:
    dest = Path(tempfile.mkdtemp(prefix="floor-")) / "pkg"
    manifest = extract_package(package, dest)
    spec = manifest.endpoints[endpoint]
    runtime = PredictionRuntime(dest, spec, threads=1)
    ctx = {"serviceId": manifest.service, "endpointId": endpoint, "serviceGeneration": manifest.version}
    return FeatureCodec(spec), runtime, ctx


def _write_ports(ports: Path, info: dict[str, int]) -> None:
    """Atomically (temp file + rename): the suite polls for the file and reads it at once."""
    tmp = ports.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(ports)


async def _http(codec: FeatureCodec, runtime: PredictionRuntime, ctx: dict[str, str], ports: Path) -> None:
    async def predict(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        row = codec.row(body["features"])
        result = codec.results(runtime.run([row]))[0].as_dict()
        return web.Response(body=orjson.dumps({"result": result, "apiContext": ctx}), content_type="application/json")

    app = web.Application()
    app.router.add_post("/public/api/v1/{service}/{endpoint}/predict", predict)
    await _serve_forever(app, ports)


async def _serve_forever(app: web.Application, ports: Path) -> None:
    """Serves `app` on a free loopback port, written to `ports`, until the process is killed."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    _write_ports(ports, {"http": port})
    await asyncio.Event().wait()


class _Floor(pbg.ApiNodeServicer):
    def __init__(self, codec: FeatureCodec, runtime: PredictionRuntime, ctx: dict[str, str]) -> None:
        self.codec, self.runtime, self.ctx = codec, runtime, ctx

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        return self._predict(request)

    async def PredictStream(self, request_iterator: AsyncIterator[pb.PredictRequest], context: Any) -> Any:
        async for request in request_iterator:
            yield self._predict(request)

    def _predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        row = self.codec.row({k: value_to_py(v) for k, v in request.features.items()})
        r = self.codec.results(self.runtime.run([row]))[0]
        return pb.PredictResponse(
            result=pb.Prediction(prediction=py_to_value(r.prediction), probas=r.probas or {}),
            api_context=pb.ApiContext(service_id=self.ctx["serviceId"], endpoint_id=self.ctx["endpointId"]),
            request_id=request.request_id,
        )


async def _grpc(codec: FeatureCodec, runtime: PredictionRuntime, ctx: dict[str, str], ports: Path) -> None:
    server = grpc.aio.server()
    pbg.add_ApiNodeServicer_to_server(_Floor(codec, runtime, ctx), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _write_ports(ports, {"grpc": port})
    await server.wait_for_termination()


REFUSAL = {
    "errorType": "OVERLOADED",
    "message": "endpoint is overloaded: its queue is full",
    "detailedMessage": "endpoint is overloaded: its queue is full",
}


async def _http503(ports: Path) -> None:
    body = orjson.dumps(REFUSAL)

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(body=body, status=503, content_type="application/json", headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/public/api/v1/{service}/{endpoint}/{verb}", refuse)
    await _serve_forever(app, ports)


class _Refuse(pbg.ApiNodeServicer):
    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL["message"])
        raise AssertionError("unreachable")  # abort raises


async def _grpc503(ports: Path) -> None:
    server = grpc.aio.server()
    pbg.add_ApiNodeServicer_to_server(_Refuse(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _write_ports(ports, {"grpc": port})
    await server.wait_for_termination()


def main() -> int:
    kind, package, endpoint, ports = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    if kind in ("http503", "grpc503"):
        uvloop.run((_http503 if kind == "http503" else _grpc503)(ports))
        return 0
    codec, runtime, ctx = _load(package, endpoint)
    uvloop.run((_http if kind == "http" else _grpc)(codec, runtime, ctx, ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
