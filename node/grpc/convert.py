"""Protobuf messages <-> the data plane's typed operations (:mod:`node.ops`).

A message's `map<string, Value>` becomes a mapping of plain Python values, its `Struct` a
JSON object (whole numbers as ints), its `Dispatch` an :class:`~node.ops.Dispatch`; results
go back field by field.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from node import errors, ops
from node._proto.apinode.v1 import apinode_pb2 as pb
from node.grpc.values import cell_to_value, py_to_value, value_to_py


def query_to_pb(out: ops.QueryResult) -> pb.QueryResponse:
    msg = pb.QueryResponse(timing=out.timing.as_dict(), api_context=context_to_pb(out.context))
    if out.rows is not None:
        msg.columns.extend(out.columns or ())
        msg.rows.extend(pb.Row(values=[cell_to_value(v) for v in row]) for row in out.rows)
    else:
        msg.updated_rows = out.updated_rows or 0
    return msg


def features_to_py(features: Any) -> dict[str, Any]:
    return {k: value_to_py(v) for k, v in features.items()}


def dispatch(msg: Any) -> ops.Dispatch | None:
    if not msg.HasField("dispatch"):
        return None
    d = msg.dispatch
    if not d.forced_generation and not d.dispatch_key:
        return None
    return ops.Dispatch(d.forced_generation or None, d.dispatch_key or None)


def _context_of(msg: Any) -> Any:
    return struct_to_py(msg.context) if msg.HasField("context") else None


def predict_request(msg: pb.PredictRequest) -> ops.PredictRequest:
    return ops.PredictRequest(
        msg.service,
        msg.endpoint,
        features_to_py(msg.features),
        _context_of(msg),
        dispatch(msg),
        msg.return_enriched,
        explanations(msg),
    )


def predict_multi_request(msg: pb.PredictMultiRequest) -> ops.PredictMultiRequest:
    return ops.PredictMultiRequest(
        msg.service,
        msg.endpoint,
        [ops.PredictItem(features_to_py(i.features), _context_of(i)) for i in msg.items],
        dispatch(msg),
        msg.return_enriched,
        explanations(msg),
    )


def lookup_request(msg: pb.LookupRequest) -> ops.LookupRequest:
    return ops.LookupRequest(msg.service, msg.endpoint, [features_to_py(i.data) for i in msg.items], dispatch(msg))


def run_request(msg: pb.RunRequest) -> ops.RunRequest:
    return ops.RunRequest(msg.service, msg.endpoint, struct_to_py(msg.arguments), dispatch(msg))


def query_request(msg: pb.QueryRequest) -> ops.QueryRequest:
    return ops.QueryRequest(msg.service, msg.endpoint, features_to_py(msg.parameters), dispatch(msg))


def prediction_to_pb(result: ops.Prediction) -> pb.Prediction:
    enriched = result.enriched_features
    return pb.Prediction(
        prediction=py_to_value(result.prediction),
        probas=result.probas or {},
        ignored=result.ignored,
        ignore_reason=result.ignore_reason or "",
        enriched_features={k: py_to_value(v) for k, v in enriched.items()} if enriched else None,
        explanations=result.explanations,
        explanation_method=result.explanation_method or "",
        proba_percentile=result.proba_percentile,
    )


def predict_response(out: ops.PredictResult, request_id: str = "") -> pb.PredictResponse:
    return pb.PredictResponse(
        result=prediction_to_pb(out.prediction),
        timing=out.timing.as_dict(),
        api_context=context_to_pb(out.context),
        request_id=request_id,
    )


def predict_multi_response(out: ops.PredictMultiResult) -> pb.PredictMultiResponse:
    return pb.PredictMultiResponse(
        results=[prediction_to_pb(r) for r in out.predictions],
        timing=out.timing.as_dict(),
        api_context=context_to_pb(out.context),
    )


def lookup_response(out: ops.LookupResult) -> pb.LookupResponse:
    return pb.LookupResponse(
        results=[lookup_result_to_pb(r) for r in out.results],
        timing=out.timing.as_dict(),
        api_context=context_to_pb(out.context),
    )


def run_response(out: ops.RunResult) -> pb.RunResponse:
    return pb.RunResponse(
        response=json_to_value(out.response), timing=out.timing.as_dict(), api_context=context_to_pb(out.context)
    )


def explanations(request: Any) -> ops.Explanations | None:
    """The request's Explanations (unset fields: the endpoint's defaults)."""
    if not request.HasField("explanations"):
        return None
    x = request.explanations
    fields = ("enabled", "method", "n_explanations", "n_monte_carlo_steps")
    return ops.Explanations(*(getattr(x, f) if x.HasField(f) else None for f in fields))


def lookup_result_to_pb(result: ops.LookupRow) -> pb.LookupResult:
    return pb.LookupResult(
        data={k: py_to_value(v) for k, v in result.data.items()},
        ignored=result.ignored,
        ignore_reason=result.ignore_reason or "",
        matches=result.matches or 0,
    )


def context_to_pb(ctx: ops.ApiContext) -> pb.ApiContext:
    return pb.ApiContext(
        service_id=ctx.service_id,
        endpoint_id=ctx.endpoint_id,
        service_generation=ctx.service_generation,
    )


def _ints(x: Any) -> Any:
    # Struct numbers are doubles; JSON callers send 3, not 3.0, and functions expect ints
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    if isinstance(x, dict):
        return {k: _ints(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_ints(v) for v in x]
    return x


def struct_to_py(s: struct_pb2.Struct) -> dict[str, Any]:
    try:
        return _ints(json_format.MessageToDict(s))  # type: ignore[no-any-return]
    except ValueError as exc:  # NaN or Infinity: a Struct may hold them, JSON may not
        raise errors.BadRequest(f"the arguments are not JSON: {exc}") from None


def json_to_value(raw: bytes) -> struct_pb2.Value:
    v = struct_pb2.Value()
    json_format.Parse(raw, v)
    return v
