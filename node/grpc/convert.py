"""Protobuf messages <-> the data plane's plain Python values."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from node import errors
from node._proto.apinode.v1 import apinode_pb2 as pb
from node.grpc.values import cell_to_value, py_to_value, value_to_py


def query_to_pb(out: dict[str, Any]) -> pb.QueryResponse:
    msg = pb.QueryResponse(timing=out["timing"], api_context=context_to_pb(out["apiContext"]))
    if "rows" in out:
        msg.columns.extend(out["columns"])
        msg.rows.extend(pb.Row(values=[cell_to_value(v) for v in row]) for row in out["rows"])
    else:
        msg.updated_rows = out["updatedRows"]
    return msg


def features_to_py(features: Any) -> dict[str, Any]:
    return {k: value_to_py(v) for k, v in features.items()}


def dispatch_to_py(msg: Any) -> dict[str, Any] | None:
    if not msg.HasField("dispatch"):
        return None
    d = msg.dispatch
    out = {}
    if d.forced_generation:
        out["forcedGeneration"] = d.forced_generation
    if d.dispatch_key:
        out["dispatchKey"] = d.dispatch_key
    return out or None


def prediction_to_pb(result: dict[str, Any]) -> pb.Prediction:
    enriched = result.get("enrichedFeatures")
    return pb.Prediction(
        prediction=py_to_value(result.get("prediction")),
        probas=result.get("probas") or {},
        ignored=bool(result.get("ignored")),
        ignore_reason=result.get("ignoreReason") or "",
        enriched_features={k: py_to_value(v) for k, v in enriched.items()} if enriched else None,
        explanations=result.get("explanations"),
        explanation_method=result.get("explanationMethod") or "",
        proba_percentile=result.get("probaPercentile"),
    )


def explanations_to_py(request: Any) -> dict[str, Any] | None:
    """The request's Explanations as the JSON API's object (unset fields: null)."""
    if not request.HasField("explanations"):
        return None
    x = request.explanations
    fields = (("enabled", "enabled"), ("method", "method"), ("nExplanations", "n_explanations"))
    out = {key: getattr(x, f) if x.HasField(f) else None for key, f in fields}
    out["nMonteCarloSteps"] = x.n_monte_carlo_steps if x.HasField("n_monte_carlo_steps") else None
    return out


def lookup_result_to_pb(result: dict[str, Any]) -> pb.LookupResult:
    return pb.LookupResult(
        data={k: py_to_value(v) for k, v in result["data"].items()},
        ignored=bool(result.get("ignored")),
        ignore_reason=result.get("ignoreReason") or "",
        matches=result.get("matches", 0),
    )


def context_to_pb(ctx: dict[str, str]) -> pb.ApiContext:
    return pb.ApiContext(
        service_id=ctx["serviceId"],
        endpoint_id=ctx["endpointId"],
        service_generation=ctx["serviceGeneration"],
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
