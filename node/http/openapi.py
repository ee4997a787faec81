"""The OpenAPI 3 document of a service (`GET /public/api/v1/{service}/swagger`) and its
human page (`GET /public/api/v1/{service}/docs`, Swagger UI shipped in node/http/static).

The document describes the service's active generation (under a mapping, the mapping's
first): one path per endpoint and verb, request schemas from the manifest
(features with their types and nullability, lookup keys, SQL parameters; a function's
arguments are free, the manifest does not list them), the answers, the error body, the
key scheme when the service has keys, and the test queries as examples. Schemas say what
the node checks: a body the schema allows must never get a 5xx, and what the node refuses
anyway should be outside the schema (the suite runs schemathesis against this document).
A service with API keys shows its document only to a caller with one of them (it names the
model's features); its page asks for the key first.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from node import errors
from node.auth import key_from_header
from node.http.app import DATAPLANE, json_response
from node.registry import Generation

STATIC = Path(__file__).parent / "static"
STATIC_URL = "/apinode/static"
_TYPES = {"float": "number", "double": "number", "int": "integer", "string": "string", "bool": "boolean"}
_SCALAR: dict[str, Any] = {"nullable": True, "anyOf": [{"type": t} for t in ("string", "number", "boolean")]}
_ERROR = {
    "type": "object",
    "required": ["errorType", "message"],
    "properties": {
        "errorType": {"type": "string", "example": "BAD_REQUEST"},
        "message": {"type": "string"},
        "detailedMessage": {"type": "string"},
    },
}
_CONTEXT = {
    "type": "object",
    "description": "the caller's context, logged with the query",
    "additionalProperties": True,
}
_DISPATCH = {
    "type": "object",
    "description": "which generation answers: forcedGeneration wins; dispatchKey for a hash mapping",
    "properties": {"forcedGeneration": {"type": "string"}, "dispatchKey": {"type": "string"}},
}
_EXPLANATIONS = {
    "type": "object",
    "description": "prediction explanations (null fields: the endpoint's defaults)",
    "properties": {
        "enabled": {"type": "boolean", "nullable": True},
        "method": {"type": "string", "nullable": True, "enum": ["SHAPLEY", "ICE", None]},
        "nExplanations": {"type": "integer", "nullable": True},
        "nMonteCarloSteps": {"type": "integer", "nullable": True},
    },
}
_API_CONTEXT = {
    "type": "object",
    "properties": {
        "serviceId": {"type": "string"},
        "endpointId": {"type": "string"},
        "serviceGeneration": {"type": "string"},
    },
}
_TIMING = {
    "type": "object",
    "description": "stage durations in microseconds",
    "additionalProperties": {"type": "number"},
}


def _test_queries(gen: Generation, rel: str | None) -> list[Any]:
    if not rel:
        return []
    try:
        queries = orjson.loads((gen.path / rel).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [q for q in queries if isinstance(q, dict)] if isinstance(queries, list) else []


def _examples(queries: list[Any]) -> dict[str, Any]:
    return {f"test{i}": {"summary": f"test query {i}", "value": q} for i, q in enumerate(queries)}


def _column_types(gen: Generation, dataset: str | None) -> dict[str, str]:
    ds = gen.manifest.datasets.get(dataset or "")
    return ds.column_types() if ds is not None else {}


def _typed(t: str, nullable: bool = True) -> dict[str, Any]:
    oa = _TYPES.get(t)
    if oa is None:
        return dict(_SCALAR)
    return {"type": oa, "nullable": True} if nullable else {"type": oa}


def _result_schema(gen: Generation, eid: str) -> dict[str, Any]:
    spec = gen.endpoints[eid].spec
    props: dict[str, Any] = {
        "ignored": {"type": "boolean"},
        "ignoreReason": {"type": "string"},
        "explanations": {"type": "object", "additionalProperties": {"type": "number"}},
        "probaPercentile": {"type": "number"},
    }
    if spec.task == "regression":
        props["prediction"] = {"type": "number"}
    else:
        props["prediction"] = {"description": f"one of {list(spec.classes or [])}"}
        props["probas"] = {"type": "object", "additionalProperties": {"type": "number"}}
    return {"type": "object", "required": ["ignored"], "properties": props}


def _features_schema(gen: Generation, eid: str) -> dict[str, Any]:
    spec = gen.endpoints[eid].spec
    # A feature the model cannot impute is required and not null (node/features.py refuses it).
    props = {f.name: _typed(f.type, f.nullable) for f in spec.features}
    enriched = {f for e in spec.enrich for f in e.columns.values()}
    required = [f.name for f in spec.features if not f.nullable and f.name not in enriched]
    # Enrichment keys are request features too (not model inputs): typed by their dataset column.
    for enrich in spec.enrich:
        types = _column_types(gen, enrich.dataset)
        fail = enrich.on_missing_key == "fail"
        for column, feature in enrich.keys.items():
            props.setdefault(feature, _typed(types.get(column, ""), not fail))
            if fail and feature not in required:
                required.append(feature)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema


def _body(schema: dict[str, Any], queries: list[Any]) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if queries:
        content["examples"] = _examples(queries)
    return {"required": True, "content": {"application/json": content}}


def _answers(schema: dict[str, Any], keyed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "the answer", "content": {"application/json": {"schema": schema}}},
        "default": {
            "description": "an error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    }
    if keyed:
        out["401"] = {
            "description": "no API key, or a wrong one",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def _operations(gen: Generation, eid: str, keyed: bool) -> dict[str, dict[str, Any]]:
    """`{verb: operation}` for one endpoint."""
    spec = gen.endpoints[eid].spec
    queries = _test_queries(gen, spec.test_queries)
    ops: dict[str, dict[str, Any]] = {}
    if spec.type in ("prediction", "custom-prediction"):
        features = _features_schema(gen, eid)
        one = {
            "type": "object",
            "required": ["features"],
            "properties": {
                "features": features,
                "explanations": _EXPLANATIONS,
                "context": _CONTEXT,
                "dispatch": _DISPATCH,
            },
        }
        item = {"type": "object", "required": ["features"], "properties": {"features": features, "context": _CONTEXT}}
        multi = {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {"type": "array", "items": item},
                "explanations": _EXPLANATIONS,
                "dispatch": _DISPATCH,
            },
        }
        result = _result_schema(gen, eid)
        ops["predict"] = {
            "summary": f"{eid}: predict one record",
            "requestBody": _body(one, queries),
            "responses": _answers(
                {
                    "type": "object",
                    "required": ["result"],
                    "properties": {"result": result, "timing": _TIMING, "apiContext": _API_CONTEXT},
                },
                keyed,
            ),
        }
        # GET predict-simple: the features as query parameters (numbers and booleans as text).
        fs = _features_schema(gen, eid)
        required = set(fs.get("required", []))
        query_params = [
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in sch.items() if k != "nullable"},
            }
            for name, sch in fs["properties"].items()
        ]
        ops["predict-simple"] = {
            "summary": f"{eid}: predict one record given as query parameters (a quick test from a browser)",
            "parameters": query_params,
            "responses": ops["predict"]["responses"],
        }
        multi_examples = [{"items": [{"features": q.get("features")} for q in queries]}] if queries else []
        ops["predict-multi"] = {
            "summary": f"{eid}: predict several records",
            "requestBody": _body(multi, multi_examples),
            "responses": _answers(
                {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {"type": "array", "items": result},
                        "timing": _TIMING,
                        "apiContext": _API_CONTEXT,
                    },
                },
                keyed,
            ),
        }
    elif spec.type == "lookup":
        assert spec.lookup is not None
        types = _column_types(gen, spec.lookup.dataset)
        keys = {k: _typed(types.get(k, ""), False) for k in spec.lookup.keys}
        data = {"type": "object", "properties": keys, "required": list(keys), "additionalProperties": True}
        row = {
            "type": "object",
            "properties": {
                "data": {"type": "object", "additionalProperties": True},
                "ignored": {"type": "boolean"},
                "ignoreReason": {"type": "string"},
            },
        }
        answer = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": row}}}
        ops["lookup"] = {
            "summary": f"{eid}: look up one record by {', '.join(keys)}",
            "requestBody": _body(
                {"type": "object", "required": ["data"], "properties": {"data": data, "context": _CONTEXT}}, queries
            ),
            "responses": _answers(answer, keyed),
        }
        ops["lookup-multi"] = {
            "summary": f"{eid}: look up several records",
            "requestBody": _body(
                {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"type": "object", "required": ["data"], "properties": {"data": data}},
                        }
                    },
                },
                [{"items": queries}] if queries else [],
            ),
            "responses": _answers(answer, keyed),
        }
    elif spec.type == "function":
        function = spec.code.name if spec.code is not None else "the function"
        ops["run"] = {
            "summary": f"{eid}: run {function}() with the body as keyword arguments",
            "requestBody": _body({"type": "object", "additionalProperties": True}, queries),
            "responses": _answers({"type": "object", "required": ["response"], "properties": {"response": {}}}, keyed),
        }
    elif spec.type == "sql":
        names = spec.sql.parameters if spec.sql is not None else []
        # The node wants exactly the statements' parameters (a missing or unknown one is a 400).
        params: dict[str, Any] = {
            "type": "object",
            "properties": {n: dict(_SCALAR) for n in names},
            "additionalProperties": False,
        }
        if names:
            params["required"] = names
        answer = {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": {"type": "array", "items": {}}},
                "updatedRows": {"type": "integer"},
            },
        }
        ops["query"] = {
            "summary": f"{eid}: run the SQL statements with parameters {', '.join(':' + n for n in names) or '(none)'}",
            "requestBody": _body(params, queries),
            "responses": _answers(answer, keyed),
        }
    return ops


def document(gen: Generation, keyed: bool) -> dict[str, Any]:
    """The OpenAPI 3.0 document of generation `gen` of its service."""
    service = gen.service
    paths: dict[str, Any] = {}
    for eid in gen.endpoints:
        for verb, op in _operations(gen, eid, keyed).items():
            op["operationId"] = f"{eid}_{verb}"  # no dot: Swagger UI escapes it into element ids
            op["tags"] = [eid]
            paths[f"/{eid}/{verb}"] = {"get" if verb == "predict-simple" else "post": op}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": f"{service} (apinode)",
            "version": gen.version,
            "description": f"Service {service}, generation {gen.version}, as served by this node.",
        },
        "servers": [{"url": f"/public/api/v1/{service}"}],
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR}},
    }
    if keyed:
        doc["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "basic", "description": "the API key as user name, empty password"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
        }
        doc["security"] = [{"apiKey": []}, {"bearer": []}]
    return doc


def _active(request: web.Request) -> tuple[Generation, bool]:
    dataplane = request.app[DATAPLANE]
    service = request.match_info["service"]
    registry = dataplane.registry
    svc = registry.services.get(service)
    if svc is None or not svc.state.enabled:
        raise errors.NotFound(f"service {service!r} is not deployed on this node")
    serving = registry.serving(svc)
    gen = svc.loaded.get(serving[0]) if serving else None
    if gen is None:
        raise errors.NotFound(f"service {service!r} has no active generation")
    return gen, dataplane.keys.requires_key(service)


async def swagger(request: web.Request) -> web.Response:
    """The document names the service's features and their types: a keyed service shows it
    only to a caller with one of its keys, as it answers predictions."""
    gen, keyed = _active(request)
    if keyed:
        key = key_from_header(request.headers.get("Authorization"))
        request.app[DATAPLANE].keys.check(gen.service, key, request.remote)
    return json_response(document(gen, keyed))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{service} (apinode)</title>
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{swagger}", dom_id: "#swagger-ui", deepLinking: true,
  tryItOutEnabled: true, validatorUrl: null}});
</script></body></html>
"""
# A keyed service's page holds no more than its name until the caller gives a key: the key
# then stays in the page's memory (never in a URL, never stored) and goes, as a Bearer
# header, with the document's fetch and with every try-it call.
_KEYED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{service} (apinode)</title>
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css"></head>
<body><form id="apikey" style="margin:2em;font-family:sans-serif">
<label>Service {service} requires an API key: <input id="key" type="password" autocomplete="off"></label>
<button type="submit">Show the API</button></form>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script>
document.getElementById("apikey").addEventListener("submit", function (event) {{
  event.preventDefault();
  const key = document.getElementById("key").value;
  window.ui = SwaggerUIBundle({{url: "{swagger}", dom_id: "#swagger-ui", deepLinking: true,
    tryItOutEnabled: true, validatorUrl: null,
    requestInterceptor: function (req) {{ req.headers["Authorization"] = "Bearer " + key; return req; }}}});
}});
</script></body></html>
"""


async def docs(request: web.Request) -> web.Response:
    gen, keyed = _active(request)
    page = (_KEYED_PAGE if keyed else _PAGE).format(
        service=html.escape(gen.service), static=STATIC_URL, swagger=f"/public/api/v1/{gen.service}/swagger"
    )
    return web.Response(text=page, content_type="text/html")


def add_openapi_routes(app: web.Application) -> None:
    for prefix in ("/public/api/v1", "//public/api/v1"):
        app.router.add_get(prefix + "/{service}/swagger", swagger)
        app.router.add_get(prefix + "/{service}/docs", docs)
    app.router.add_static(STATIC_URL, STATIC, follow_symlinks=False)
