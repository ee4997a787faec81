"""Plays a package's test queries against a node, over gRPC (user API) or JSON HTTP.

What the callers will see: each query goes through the node's public API like any
request (dispatch, pools, API key), and its result says whether it succeeded, how long it
took, and which generation answered.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from deployer.errors import Unreachable
from deployer.models import TestQueryResult
from deployer.packagefile import TestQuery
from deployer.transport import Tls, channel, wait_connected
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc
from node.grpc.values import py_to_value, value_to_py


def _dispatch(body: dict[str, Any], forced: str | None) -> pb.Dispatch | None:
    raw = body.get("dispatch")
    d: dict[str, Any] = raw if isinstance(raw, dict) else {}
    forced = forced or d.get("forcedGeneration") or ""
    key = d.get("dispatchKey") or ""
    if not forced and not key:
        return None
    return pb.Dispatch(forced_generation=str(forced), dispatch_key=str(key))


def _ints(x: Any) -> Any:
    """Struct numbers are doubles: show 3, not 3.0, as the JSON API would."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    if isinstance(x, dict):
        return {k: _ints(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_ints(v) for v in x]
    return x


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    json_format.ParseDict(d, s)
    return s


def _grpc_call(
    stub: apinode_pb2_grpc.ApiNodeStub,
    service: str,
    q: TestQuery,
    forced: str | None,
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
) -> tuple[Any, str]:
    """Plays one query with the RPC of its endpoint's kind; (the answer as JSON, generation)."""
    body = q.body
    verb = q.verb
    flat = verb in ("run", "query")  # the body is the arguments: dispatch travels beside it
    dispatch = _dispatch({} if flat else body, forced)
    if verb == "run":
        run = pb.RunRequest(service=service, endpoint=q.endpoint, arguments=_struct(body), dispatch=dispatch)
        reply = stub.Run(run, timeout=timeout, metadata=metadata)
        response = _ints(json_format.MessageToDict(reply.response))
        return {"response": response}, reply.api_context.service_generation
    if verb == "query":
        params = {k: py_to_value(v) for k, v in body.items()}
        qreq = pb.QueryRequest(service=service, endpoint=q.endpoint, parameters=params, dispatch=dispatch)
        qreply = stub.Query(qreq, timeout=timeout, metadata=metadata)
        if qreply.HasField("updated_rows"):
            return {"updatedRows": qreply.updated_rows}, qreply.api_context.service_generation
        rows = [[value_to_py(v) for v in row.values] for row in qreply.rows]
        return {"columns": list(qreply.columns), "rows": rows}, qreply.api_context.service_generation
    if verb in ("lookup", "lookup-multi"):
        raw = body.get("items") if verb == "lookup-multi" else [body]
        items = [
            pb.LookupItem(data={k: py_to_value(v) for k, v in (i.get("data") or {}).items()})
            for i in raw or []
            if isinstance(i, dict)
        ]
        lreq = pb.LookupRequest(service=service, endpoint=q.endpoint, items=items, dispatch=dispatch)
        lreply = stub.Lookup(lreq, timeout=timeout, metadata=metadata)
        found = []
        for r in lreply.results:
            one: dict[str, Any] = {"data": {k: value_to_py(v) for k, v in r.data.items()}}
            if r.ignored:
                one.update(ignored=True, ignoreReason=r.ignore_reason)
            found.append(one)
        return {"results": found}, lreply.api_context.service_generation
    if verb == "predict-multi":
        pitems = [
            pb.PredictItem(features={k: py_to_value(v) for k, v in (i.get("features") or {}).items()})
            for i in body["items"]
        ]
        multi = pb.PredictMultiRequest(service=service, endpoint=q.endpoint, items=pitems, dispatch=dispatch)
        mreply = stub.PredictMulti(multi, timeout=timeout, metadata=metadata)
        results = [json_format.MessageToDict(r) for r in mreply.results]
        return {"results": results}, mreply.api_context.service_generation
    features = {k: py_to_value(v) for k, v in (body.get("features") or {}).items()}
    req = pb.PredictRequest(service=service, endpoint=q.endpoint, features=features, dispatch=dispatch)
    if isinstance(body.get("context"), dict):
        req.context.CopyFrom(_struct(body["context"]))
    reply = stub.Predict(req, timeout=timeout, metadata=metadata)
    result: dict[str, Any] = {"prediction": value_to_py(reply.result.prediction), "ignored": reply.result.ignored}
    if reply.result.probas:
        result["probas"] = dict(reply.result.probas)
    if reply.result.ignore_reason:
        result["ignoreReason"] = reply.result.ignore_reason
    return {"result": result}, reply.api_context.service_generation


def play_grpc(
    target: str,
    service: str,
    queries: Sequence[TestQuery],
    *,
    api_key: str | None = None,
    forced_generation: str | None = None,
    timeout: float = 30.0,
    tls: Tls | None = None,
) -> list[TestQueryResult]:
    """Plays the queries through the node's gRPC user API (the RPC of each endpoint's kind)."""
    ch = channel(target, tls)
    try:
        wait_connected(ch, target, min(timeout, 10.0), tls)
        stub = apinode_pb2_grpc.ApiNodeStub(ch)
        metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        results = []
        for q in queries:
            t0 = time.perf_counter()
            try:
                out, gen = _grpc_call(stub, service, q, forced_generation, metadata, timeout)
                ms = (time.perf_counter() - t0) * 1000
                results.append(TestQueryResult(q.endpoint, q.index, True, "", ms, out, gen))
            except grpc.RpcError as exc:
                ms = (time.perf_counter() - t0) * 1000
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                results.append(TestQueryResult(q.endpoint, q.index, False, f"{code}: {details}", ms))
        return results
    finally:
        ch.close()


def play_http(
    base_url: str,
    service: str,
    queries: Sequence[TestQuery],
    *,
    api_key: str | None = None,
    forced_generation: str | None = None,
    timeout: float = 30.0,
    tls: Tls | None = None,
) -> list[TestQueryResult]:
    """Plays the queries through the node's JSON HTTP API (POST /public/api/v1/...); an
    `https://` URL trusts `tls`'s CA (default: the system's) and presents its certificate."""
    context = (tls or Tls()).ssl_context() if base_url.startswith("https://") else None
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
    results = []
    for q in queries:
        body, call_headers = dict(q.body), dict(headers)
        if forced_generation and q.verb in ("run", "query"):  # these bodies are the arguments
            call_headers["X-Dispatch-Forced-Generation"] = forced_generation
        elif forced_generation:
            body["dispatch"] = {**(body.get("dispatch") or {}), "forcedGeneration": forced_generation}
        url = f"{base_url.rstrip('/')}/public/api/v1/{service}/{q.endpoint}/{q.verb}"
        req = urllib.request.Request(url, json.dumps(body).encode(), call_headers, method="POST")
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                out = json.loads(resp.read() or b"null")
            ms = (time.perf_counter() - t0) * 1000
            gen = (out.get("apiContext") or {}).get("serviceGeneration", "") if isinstance(out, dict) else ""
            if isinstance(out, dict):
                out = {k: v for k, v in out.items() if k not in ("timing", "apiContext")}
            results.append(TestQueryResult(q.endpoint, q.index, True, "", ms, out, gen))
        except urllib.error.HTTPError as exc:
            ms = (time.perf_counter() - t0) * 1000
            results.append(TestQueryResult(q.endpoint, q.index, False, _http_error(exc), ms))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"node {base_url} unreachable over HTTP: {reason}") from None
    return results


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read())
        return f"{doc.get('errorType', exc.code)}: {doc.get('detailedMessage') or doc.get('message')}"
    except (ValueError, OSError, AttributeError):
        return f"HTTP {exc.code}: {exc.reason}"
