"""The Open Inference Protocol rows of `make bench`: gRPC `ModelInfer` on the node against
the gRPC floor's `Predict` (the same model behind a bare grpc.aio handler), with h2load; and
HTTP `POST /v2/models/<service>.<endpoint>/infer` (one row as JSON tensors, as
`tritonclient.http` sends it) against the aiohttp floor's Dataiku `predict`, with wrk.

The request is what `tritonclient.grpc` sends for one row: the model's inputs, as its
metadata (`GET /v2/models/<service>.<endpoint>`) describes them, in `raw_input_contents`.
For the fraud example, which enriches, those are `customer_id` and the features; a tensor
holds no null, so a feature the row leaves null (optional: nullable, or looked up) is left
out. It is checked once through grpc (status OK, outputs present) before h2load sends it.

The stubs of `inference` are imported here only: `tritonclient.grpc` declares the same
proto package, and the two cannot share a process (tests import tritonclient).
"""

from __future__ import annotations

import struct
from typing import Any

import grpc
import numpy as np
import orjson
import requests

from loadtest import bench_tools as tools
from loadtest.bench_env import Counters, server_cpu
from loadtest.bench_runs import Bench, Model, Row, compare, say
from loadtest.config import Target
from loadtest.grpc_messages import encode_bodies, method_path
from node._proto.inference import grpc_service_pb2 as pb

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "?"}


def _raw(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        texts = [str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(t)) + t for t in texts)
    return np.asarray(values, dtype=_NUMPY[datatype]).tobytes()


def infer_message(http: str, model: str, features: dict[str, Any]) -> bytes:
    """A serialized ModelInferRequest of one row, shaped by the model's metadata."""
    meta = requests.get(f"{http}/v2/models/{model}", timeout=30).json()
    names = meta["parameters"]["features"]
    inputs, raw = [], []
    if len(meta["inputs"]) == 1 and meta["inputs"][0]["name"] not in names:
        t = meta["inputs"][0]
        inputs.append(
            pb.ModelInferRequest.InferInputTensor(name=t["name"], datatype=t["datatype"], shape=[1, len(names)])
        )
        raw.append(_raw(t["datatype"], [features.get(n) for n in names]))
    else:
        for t in meta["inputs"]:
            value = features.get(t["name"])
            if value is None:
                continue
            inputs.append(pb.ModelInferRequest.InferInputTensor(name=t["name"], datatype=t["datatype"], shape=[1, 1]))
            raw.append(_raw(t["datatype"], [value]))
    request = pb.ModelInferRequest(model_name=model, inputs=inputs, raw_input_contents=raw)
    return bytes(request.SerializeToString())


def infer_json(http: str, model: str, features: dict[str, Any]) -> bytes:
    """The JSON body of an OIP HTTP infer of one row, shaped by the model's metadata."""
    meta = requests.get(f"{http}/v2/models/{model}", timeout=30).json()
    names = meta["parameters"]["features"]
    inputs: list[dict[str, Any]] = []
    if len(meta["inputs"]) == 1 and meta["inputs"][0]["name"] not in names:
        t = meta["inputs"][0]
        data = [features.get(n) for n in names]
        inputs.append({"name": t["name"], "shape": [1, len(names)], "datatype": t["datatype"], "data": data})
    else:
        for t in meta["inputs"]:
            value = features.get(t["name"])
            if value is not None:
                inputs.append({"name": t["name"], "shape": [1, 1], "datatype": t["datatype"], "data": [value]})
    return orjson.dumps({"inputs": inputs})


def bench_oip_http(
    m: Model,
    b: Bench,
    floor_url: str,
    http: str,
    counters: Counters,
    pids: dict[str, list[int]],
    connections: int,
) -> dict[str, Any]:
    say(f"  OIP HTTP infer, wrk -c{connections} (floor: aiohttp Dataiku predict)")
    model = f"{m.service}.{m.endpoint}"
    node_body = infer_json(http, model, m.bodies[0].get("features", {}))
    check = requests.post(f"{http}/v2/models/{model}/infer", data=node_body, timeout=30)
    checked = (
        "ok" if check.status_code == 200 and check.json().get("outputs") else f"{check.status_code}: {check.text[:200]}"
    )
    say(f"   wrk body checked: {checked}")
    floor_t = Target(mode="http", url=floor_url, service=m.service, endpoint=m.endpoint)
    calls = {
        "floor": (floor_t.http_url(), orjson.dumps(m.bodies[0])),
        "node": (f"{http}/v2/models/{model}/infer", node_body),
    }

    def wrk(who: str) -> Row:
        url, body = calls[who]
        return tools.wrk(url, body, concurrency=connections, duration=b.duration, work=b.work, cpus=b.gen_cpus).row()

    return {
        "reference": f"wrk -c{connections}",
        "body_check": {"node": checked},
        f"wrk -c{connections}": compare(
            "oip-http",
            server_cpu(pids["floor"], lambda: wrk("floor")),
            counters.around(server_cpu(pids["node"], lambda: wrk("node"))),
            b.rounds,
        ),
    }


def verify_infer(address: str, message: bytes, timeout: float = 10.0) -> str | None:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            MODEL_INFER, request_serializer=None, response_deserializer=pb.ModelInferResponse.FromString
        )
        try:
            answer = call(message, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return f"grpc status {code.name if code else 'UNKNOWN'}: {exc}"
    return None if answer.outputs and answer.raw_output_contents else "answer without outputs"


def bench_oip_grpc(
    m: Model,
    b: Bench,
    floor_addr: str,
    node_addr: str,
    http: str,
    counters: Counters,
    pids: dict[str, list[int]],
    concurrency: int,
) -> dict[str, Any]:
    say(f"  OIP gRPC ModelInfer, concurrency {concurrency} (floor: gRPC Predict)")
    features = m.bodies[0].get("features", {})
    node_msg = infer_message(http, f"{m.service}.{m.endpoint}", features)
    floor_t = Target(mode="grpc", grpc=floor_addr, service=m.service, endpoint=m.endpoint)
    floor_msg = encode_bodies(floor_t, m.bodies[:1])[0]
    checked = {
        "floor": tools.verify_grpc(floor_addr, method_path("Predict"), [floor_msg]) or "ok",
        "node": verify_infer(node_addr, node_msg) or "ok",
    }
    say(f"   h2load bodies checked through grpc: {checked}")
    calls = {"floor": (floor_addr, method_path("Predict"), floor_msg), "node": (node_addr, MODEL_INFER, node_msg)}

    def h2load(who: str) -> Row:
        addr, path, msg = calls[who]
        return tools.h2load(
            addr,
            path,
            tools.grpc_frame([msg]),
            clients=1,
            streams=concurrency,
            duration=b.duration,
            warmup=0.0,  # the server CPU per request counts every call: none may go unmeasured
            work=b.work,
            cpus=b.gen_cpus,
        ).row()

    return {
        "reference": "h2load",
        "body_check": checked,
        "h2load": compare(
            "oip-grpc",
            server_cpu(pids["floor"], lambda: h2load("floor")),
            counters.around(server_cpu(pids["node"], lambda: h2load("node"))),
            b.rounds,
        ),
    }
