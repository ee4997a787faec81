"""JSON request bodies → serialized apinode.v1 messages, once, before the run.

The bodies are the JSON API's (``{"features": {...}, "context"?, "dispatch"?}`` for a
prediction, ``{"items": [...]}`` for several, the keyword arguments for a function,
``{"data": {...}}`` or ``{"items": [{"data"}]}`` for a lookup, the parameters of an SQL
query), so one
payload file drives both transports. Features become typed ``Value``s (integer, number,
text, flag, null: :mod:`node.grpc.values`). Messages are serialized here, so the hot loop sends bytes and the
gRPC call does no protobuf work for the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtest.config import ConfigError, Target
from node._proto.apinode.v1 import apinode_pb2 as pb
from node.grpc.values import is_scalar, py_to_value

_SERVICE = pb.DESCRIPTOR.services_by_name["ApiNode"]
_RPC_OF_VERB = {
    "predict": "Predict",
    "predict-multi": "PredictMulti",
    "run": "Run",
    "lookup": "Lookup",
    "lookup-multi": "Lookup",
    "query": "Query",
}


def method_path(rpc: str) -> str:
    """``"/apinode.v1.ApiNode/Predict"``: the wire name of an RPC, from the proto itself."""
    return f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name[rpc].name}"


def rpc_of(verb: str) -> str:
    try:
        return _RPC_OF_VERB[verb]
    except KeyError:
        raise ConfigError(f"verb {verb!r} has no gRPC call") from None


def encode_bodies(target: Target, bodies: Sequence[Any], *, stream: bool = False) -> list[bytes]:
    """Serialized requests of ``target.verb`` for each body (request_id = its index on streams)."""
    service, endpoint = target.service or "", target.endpoint or ""
    out = []
    for i, body in enumerate(bodies):
        if not isinstance(body, dict):
            raise ConfigError(f"request body #{i} is not a JSON object")
        try:
            msg = _message(target.verb, service, endpoint, body)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"request body #{i}: {exc}") from exc
        if stream and isinstance(msg, pb.PredictRequest):
            msg.request_id = str(i)
        out.append(msg.SerializeToString())
    return out


def _message(
    verb: str, service: str, endpoint: str, body: dict[str, Any]
) -> pb.PredictRequest | pb.PredictMultiRequest | pb.RunRequest | pb.LookupRequest | pb.QueryRequest:
    if verb == "predict":
        req = pb.PredictRequest(service=service, endpoint=endpoint)
        _fill_item(req, body)
        _fill_dispatch(req.dispatch, body.get("dispatch"))
        return req
    if verb == "predict-multi":
        multi = pb.PredictMultiRequest(service=service, endpoint=endpoint)
        items = body.get("items")
        if not isinstance(items, list):
            raise ValueError("a predict-multi body needs an 'items' list")
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("each item must be an object")
            _fill_item(multi.items.add(), item)
        _fill_dispatch(multi.dispatch, body.get("dispatch"))
        return multi
    if verb == "run":
        run = pb.RunRequest(service=service, endpoint=endpoint)
        run.arguments.update(body)
        return run
    if verb in ("lookup", "lookup-multi"):
        lookup = pb.LookupRequest(service=service, endpoint=endpoint)
        items = body.get("items") if "items" in body else [body]
        if not isinstance(items, list):
            raise ValueError("a lookup-multi body needs an 'items' list")
        for item in items:
            data = item.get("data") if isinstance(item, dict) else None
            if not isinstance(data, dict):
                raise ValueError('a lookup body is {"data": {key: value}} (or "items" of those)')
            one = lookup.items.add()
            for name, value in data.items():
                one.data[str(name)].CopyFrom(to_value(value))
        _fill_dispatch(lookup.dispatch, body.get("dispatch"))
        return lookup
    if verb == "query":
        query = pb.QueryRequest(service=service, endpoint=endpoint)
        for name, value in body.items():
            query.parameters[str(name)].CopyFrom(to_value(value))
        return query
    raise ValueError(f"verb {verb!r} has no gRPC call")


def _fill_item(msg: pb.PredictRequest | pb.PredictItem, body: dict[str, Any]) -> None:
    features = body.get("features", {})
    if not isinstance(features, dict):
        raise ValueError("'features' must be an object")
    for name, value in features.items():
        msg.features[str(name)].CopyFrom(to_value(value))
    context = body.get("context")
    if isinstance(context, dict):
        msg.context.update(context)


def _fill_dispatch(msg: pb.Dispatch, dispatch: Any) -> None:
    if isinstance(dispatch, dict):
        msg.forced_generation = str(dispatch.get("forcedGeneration") or "")
        msg.dispatch_key = str(dispatch.get("dispatchKey") or "")


def to_value(x: Any) -> pb.Value:
    """A JSON scalar as a typed feature value (node.grpc.values' rule); an array or object
    is refused, as the JSON API refuses it for a feature."""
    if not is_scalar(x):
        raise TypeError(f"a feature must be a number, text, boolean or null, not {type(x).__name__}")
    return py_to_value(x)
