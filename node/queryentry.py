"""The query log's line for one operation, built from its typed request and result.

The format is the node's (documented in the README, pinned by tests/node/test_query_log.py):
who and what (`service`, `endpoint`, `verb`, `generation`, `protocol`, `apiKeyId`, `peer`,
`status`, `error`), what was asked (`features`/`context`, `items`/`itemContexts`, `data`, or
`arguments` for a function's arguments and an SQL endpoint's parameters, all of which
:class:`~node.querylog.QueryLog` filters by the service's `exclude`), what the model saw
after enrichment (`enriched`/`enrichedItems`), and the answer (`timing`, `result(s)`,
`response`). An SQL endpoint's answer is logged by its size, not its rows: a query log is
not a copy of the database.
"""

from __future__ import annotations

from typing import Any

import orjson

from node import ops


def _features(x: Any) -> Any:
    return None if x is ops.MISSING else x


def _column_items(rows: ops.Columns) -> list[dict[str, Any]]:
    cols = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in rows.columns.items()}
    return [{k: c[i] for k, c in cols.items()} for i in range(rows.n)]


def _asked(verb: str, req: ops.Request) -> dict[str, Any]:
    """What the caller asked, under the log's names."""
    if isinstance(req, ops.RunRequest):
        return {"arguments": req.arguments}
    if isinstance(req, ops.QueryRequest):
        return {"arguments": req.parameters}
    if isinstance(req, ops.LookupRequest):
        if verb == "lookup":
            return {"data": _features(req.items[0]) if req.items else None}
        return {"data": [_features(i) for i in req.items]}
    if isinstance(req, ops.PredictRequest):
        return {"context": req.context, "features": _features(req.features)}
    if isinstance(req, ops.PredictRowsRequest) and req.items is None:
        assert req.rows is not None
        return {"context": None, "items": _column_items(req.rows)}
    items = req.items or []
    out = {"context": req.context if isinstance(req, ops.PredictMultiRequest) else None}
    out["items"] = [_features(i.features) for i in items]
    if any(i.context is not None for i in items):  # one per item, in order (null where none)
        out["itemContexts"] = [i.context for i in items]
    return out


def _answered(result: ops.Result) -> dict[str, Any]:
    out: dict[str, Any] = {"timing": result.timing.as_dict()}
    if isinstance(result, ops.RunResult):
        out["response"] = orjson.Fragment(result.response)
    elif isinstance(result, ops.QueryResult):
        out["result"] = (
            {"columns": result.columns, "rowCount": len(result.rows)}
            if result.rows is not None
            else {"updatedRows": result.updated_rows}
        )
    elif isinstance(result, ops.PredictResult):
        out["result"] = result.prediction.as_dict()
    elif isinstance(result, ops.PredictMultiResult):
        out["results"] = [p.as_dict() for p in result.predictions]
    else:
        out["results"] = [r.as_dict() for r in result.results]
    return out


def entry(
    verb: str,
    req: ops.Request,
    result: ops.Result | None,
    *,
    generation: str,
    caller: ops.Caller,
    key_id: str | None,
    status: str,
    error: str | None = None,
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "service": req.service,
        "endpoint": req.endpoint,
        "verb": verb,
        "generation": generation,
        "protocol": caller.protocol,
        "apiKeyId": key_id,
        "peer": caller.peer,
        "status": status,
    }
    if error is not None:
        line["error"] = error
    line.update(_asked(verb, req))
    enriched = getattr(result, "enriched", None)
    if enriched is not None:  # the features the model saw, after enrichment
        line["enriched" if verb == "predict" else "enrichedItems"] = enriched
    if result is not None:
        line.update(_answered(result))
    return line
