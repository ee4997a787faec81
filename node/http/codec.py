"""The Dataiku API node's JSON <-> the data plane's typed operations.

A verb of the URL (`/public/api/v1/{service}/{endpoint}/{verb}`) names the operation;
`VERBS` maps each to its decoder, its data plane method and its encoder. Verbs of the
Dataiku API that apinode lacks (forecast, causal predictions) and unknown verbs are refused
by `refuse_verb`. Bodies follow the Dataiku API: `predict` takes `{"features", "context",
"dispatch", "returnEnriched", "explanations"}` and answers `{"result", "timing",
"apiContext"}`; `predict-multi` takes `{"items": [{"features", "context"}], ...}` and answers
`{"results", ...}`; `lookup` `{"data"}` -> `{"results": [{"data"}]}`; `run` and `query` take
the arguments themselves as the body (so their dispatch travels in the headers
`X-Dispatch-Forced-Generation` and `X-Dispatch-Key`) and answer the function's JSON
(`response`) or an SQL endpoint's `{"columns", "rows"}` / `{"updatedRows"}`.

The deploy's test queries are such bodies too (:mod:`node.admin`). Nothing here imports
aiohttp.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from node import errors, ops
from node.dataplane import DataPlane

# Verbs of the Dataiku API node (and its client) that apinode does not have
UNSUPPORTED_VERBS = {
    "forecast": "time-series forecasting",
    "predict-effect": "causal prediction (treatment effects)",
    "predict-effect-multi": "causal prediction (treatment effects)",
}
# The verb that plays an endpoint kind's test queries
TEST_VERB = {
    "prediction": "predict",
    "custom-prediction": "predict",
    "function": "run",
    "lookup": "lookup",
    "sql": "query",
}
_HEADER_DISPATCH = (("X-Dispatch-Forced-Generation", "forced_generation"), ("X-Dispatch-Key", "dispatch_key"))


def _dispatch(body: dict[str, Any]) -> ops.Dispatch | None:
    d = body.get("dispatch")
    if d is None:
        return None
    if not isinstance(d, dict):
        raise errors.BadRequest("'dispatch' must be an object")
    return ops.Dispatch(d.get("forcedGeneration"), d.get("dispatchKey"))


def header_dispatch(headers: Mapping[str, str]) -> ops.Dispatch | None:
    """`run` and `query`: the body is the arguments, so dispatch travels in headers."""
    given = {field: headers.get(name) for name, field in _HEADER_DISPATCH}
    return ops.Dispatch(**{k: v for k, v in given.items() if v}) if any(given.values()) else None


def _explanations(body: dict[str, Any]) -> ops.Explanations | None:
    x = body.get("explanations")
    if x is None:
        return None
    if not isinstance(x, dict):
        raise errors.BadRequest(f"explanations must be an object, got {type(x).__name__}")
    return ops.Explanations(x.get("enabled"), x.get("method"), x.get("nExplanations"), x.get("nMonteCarloSteps"))


def _items(body: dict[str, Any], what: str) -> list[Any]:
    items = body.get("items")
    if not isinstance(items, list):
        raise errors.BadRequest(f"the body needs 'items': a list of {{\"{what}\": {{...}}}}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.BadRequest(f"items[{i}] must be an object with '{what}'")
    return items


def predict_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.PredictRequest:
    return ops.PredictRequest(
        service,
        endpoint,
        body.get("features", ops.MISSING),
        body.get("context"),
        _dispatch(body),
        bool(body.get("returnEnriched")),
        _explanations(body),
    )


def predict_multi_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.PredictMultiRequest:
    items = [ops.PredictItem(i.get("features", ops.MISSING), i.get("context")) for i in _items(body, "features")]
    return ops.PredictMultiRequest(
        service,
        endpoint,
        items,
        _dispatch(body),
        bool(body.get("returnEnriched")),
        _explanations(body),
        body.get("context"),
    )


def lookup_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.LookupRequest:
    return ops.LookupRequest(service, endpoint, [body.get("data", ops.MISSING)], _dispatch(body))


def lookup_multi_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.LookupRequest:
    items = [i.get("data", ops.MISSING) for i in _items(body, "data")]
    return ops.LookupRequest(service, endpoint, items, _dispatch(body))


def run_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.RunRequest:
    return ops.RunRequest(service, endpoint, body, header_dispatch(headers) if headers is not None else None)


def query_request(
    service: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> ops.QueryRequest:
    return ops.QueryRequest(service, endpoint, body, header_dispatch(headers) if headers is not None else None)


def _context(ctx: ops.ApiContext) -> dict[str, str]:
    return {"serviceId": ctx.service_id, "endpointId": ctx.endpoint_id, "serviceGeneration": ctx.service_generation}


def encode(result: ops.Result) -> dict[str, Any]:
    """The answer's JSON object (a function's response is a raw JSON fragment)."""
    out: dict[str, Any]
    if isinstance(result, ops.PredictResult):
        out = {"result": result.prediction.as_dict()}
    elif isinstance(result, ops.PredictMultiResult):
        out = {"results": [p.as_dict() for p in result.predictions]}
    elif isinstance(result, ops.LookupResult):
        out = {"results": [r.as_dict() for r in result.results]}
    elif isinstance(result, ops.RunResult):
        out = {"response": orjson.Fragment(result.response)}
    elif result.rows is not None:
        out = {"columns": result.columns, "rows": result.rows}
    else:
        out = {"updatedRows": result.updated_rows}
    out["timing"] = result.timing.as_dict()
    out["apiContext"] = _context(result.context)
    return out


Decoder = Callable[[str, str, dict[str, Any], Mapping[str, str] | None], Any]


@dataclass(frozen=True, slots=True)
class Verb:
    decode: Decoder
    call: Callable[[DataPlane, Any, ops.Caller], Awaitable[ops.Result]]


VERBS: dict[str, Verb] = {
    "predict": Verb(predict_request, DataPlane.predict),
    "predict-multi": Verb(predict_multi_request, DataPlane.predict_multi),
    "run": Verb(run_request, DataPlane.run),
    "lookup": Verb(lookup_request, DataPlane.lookup),
    "lookup-multi": Verb(lookup_multi_request, DataPlane.lookup_multi),
    "query": Verb(query_request, DataPlane.query),
}


def refuse_verb(verb: str) -> errors.ApiNodeError:
    """The error for a verb that `VERBS` does not have."""
    if verb in UNSUPPORTED_VERBS:
        return errors.NotSupported(
            f"the verb {verb!r} ({UNSUPPORTED_VERBS[verb]}) is not supported by apinode; "
            f"its verbs are {', '.join(VERBS)}"
        )
    return errors.NotFound(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")


class DataikuTestQueries:
    """What the admin plane plays: a package's test queries are bodies of the Dataiku API,
    and their answers are shown as it answers (:class:`node.admin.TestQueryCodec`)."""

    def decode(self, kind: str, service: str, endpoint: str, body: dict[str, Any]) -> ops.Request:
        request: ops.Request = VERBS[TEST_VERB[kind]].decode(service, endpoint, body, None)
        return request

    def encode(self, result: ops.Result) -> Any:
        if isinstance(result, ops.RunResult):
            return {"response": orjson.loads(result.response)}
        return encode(result)
