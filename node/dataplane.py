"""The data plane: every user operation, in plain Python types, for both transports.

The aiohttp handlers and the gRPC servicers only decode, call :meth:`DataPlane.call`, and
encode. `call` resolves the generation (dispatch), runs the verb, and records the outcome
and latency once, whatever the transport. Request and response shapes follow the Dataiku
API node (see the README): `predict` answers `{"result", "timing", "apiContext"}`,
`predict-multi` `{"results", ...}`, `run` the function's JSON and its context, `lookup`
`{"results": [{"data"}]}`, `query` an SQL endpoint's `{"columns", "rows"}` or `{"updatedRows"}`
(:mod:`node.worker.sql`). Lookups and enrichment run here, in the front process, from
indexes of the bundled datasets (:mod:`node.lookup`): no worker round trip.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from node import errors
from node import explanations as expl
from node.auth import ApiKeys
from node.features import MAX_STRING_CHARS
from node.lookup import LookupEndpoint
from node.metrics import Metrics
from node.querylog import QueryLog
from node.registry import Endpoint, Generation, Registry

VERBS = ("predict", "predict-multi", "run", "lookup", "lookup-multi", "query")
# Verbs of the Dataiku API node (and its client) that apinode does not have
UNSUPPORTED_VERBS = {
    "forecast": "time-series forecasting",
    "predict-effect": "causal prediction (treatment effects)",
    "predict-effect-multi": "causal prediction (treatment effects)",
}
FLAT_VERBS = ("run", "query")  # the body is the arguments themselves: dispatch travels beside it
# The verb that plays an endpoint kind's test queries
TEST_VERB = {
    "prediction": "predict",
    "custom-prediction": "predict",
    "function": "run",
    "lookup": "lookup",
    "sql": "query",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may hold. Each limit has an error of its own naming it and its
    `apinode serve` option; the body size (`--max-body-mb`) and the gRPC message size
    (`--max-grpc-message-mb`) are enforced by the servers themselves."""

    max_items: int = 10_000  # items in one predict-multi call
    max_json_depth: int = 64  # nesting of a JSON body: deep bodies cost recursion everywhere
    max_string_chars: int = MAX_STRING_CHARS  # a string feature value, or any string (or key) of a JSON body


MAX_JSON_DEPTH_CAP = 200  # orjson writes at most 254 levels (query log, function results)
_UNKNOWN = "(unknown)"  # the metric label of a name the registry does not know


def _context(gen: Generation, endpoint: str) -> dict[str, str]:
    return {"serviceId": gen.service, "endpointId": endpoint, "serviceGeneration": gen.version}


class DataPlane:
    def __init__(
        self,
        registry: Registry,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
        keys: ApiKeys | None = None,
        querylog: QueryLog | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics(registry.sup)
        self.keys = keys or registry.keys
        self.querylog = querylog
        self.draining = False  # SIGTERM: not ready, still serving (node.server)
        self.metrics.inflight.endpoints = self._served_endpoints

    async def call(
        self,
        verb: str,
        service: str,
        endpoint: str,
        body: dict[str, Any],
        *,
        protocol: str,
        dispatch: dict[str, Any] | None = None,
        api_key: str | None = None,
        peer: str | None = None,
    ) -> dict[str, Any]:
        """Runs one user operation (see `_call`), counted in flight until it is answered."""
        key = (service, endpoint)
        inflight = self.metrics.inflight
        inflight.enter(key)
        try:
            return await self._call(
                verb, service, endpoint, body, protocol=protocol, dispatch=dispatch, api_key=api_key, peer=peer
            )
        finally:
            inflight.leave(key)

    def _served_endpoints(self) -> list[tuple[str, str]]:
        return [
            (s.id, ep) for s in list(self.registry.services.values()) for g in s.loaded.values() for ep in g.endpoints
        ]

    async def _call(
        self,
        verb: str,
        service: str,
        endpoint: str,
        body: dict[str, Any],
        *,
        protocol: str,
        dispatch: dict[str, Any] | None = None,
        api_key: str | None = None,
        peer: str | None = None,
    ) -> dict[str, Any]:
        """Runs one user operation. For `run`, `body` is the function's arguments and the
        answer's `response` holds the JSON bytes of its return value; for `query`, `body`
        is the SQL parameters."""
        t0 = time.perf_counter()
        generation = ""
        key_id = None
        try:
            key_id = self.keys.check(service, api_key, peer)
            if verb in UNSUPPORTED_VERBS:
                raise errors.NotSupported(
                    f"the verb {verb!r} ({UNSUPPORTED_VERBS[verb]}) is not supported by apinode; "
                    f"its verbs are {', '.join(VERBS)}"
                )
            if verb not in VERBS:
                raise errors.NotFound(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")
            try:
                gen, ep = self.registry.resolve(
                    service, endpoint, dispatch if verb in FLAT_VERBS else body.get("dispatch")
                )
            except errors.DispatchKeyMissing as exc:
                raise errors.DispatchKeyMissing(exc.service, _how_to_dispatch(verb, protocol)) from None
            generation = gen.version
            if ep.pool is not None:  # a full queue refuses before decoding, enriching, validating
                ep.pool.refuse_if_full()
            out = await self.call_on(verb, gen, ep, body)
        except errors.ApiNodeError as exc:
            outcome = errors.kind_of(exc).error_type
            m_service, m_endpoint = (service, endpoint) if generation else self._metric_names(service, endpoint)
            self.metrics.observe(m_service, m_endpoint, generation, protocol, outcome, time.perf_counter() - t0)
            if self.querylog is not None and outcome not in ("UNAUTHORIZED", "FORBIDDEN"):
                self._log(verb, service, endpoint, generation, protocol, key_id, peer, body, None, outcome, exc.message)
            raise
        enriched = out.pop("_enriched", None)
        timing = out["timing"]
        compute = timing.get("prediction", timing.get("execution", 0.0))
        self.metrics.observe(
            service, endpoint, generation, protocol, "ok", time.perf_counter() - t0, timing.get("wait", 0.0), compute
        )
        if self.querylog is not None:
            self._log(verb, service, endpoint, generation, protocol, key_id, peer, body, out, "ok", None, enriched)
        return out

    async def call_on(self, verb: str, gen: Generation, ep: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """Runs `verb` on a resolved endpoint (no auth, metrics or log: `call` does those)."""
        if verb == "predict":
            return await self.predict_on(gen, ep, body)
        if verb == "predict-multi":
            return await self.predict_multi_on(gen, ep, body)
        if verb == "run":
            return await self.run_on(gen, ep, body)
        if verb == "lookup":
            return self.lookup_on(gen, ep, body)
        if verb == "lookup-multi":
            return self.lookup_multi_on(gen, ep, body)
        if verb == "query":
            return await self.query_on(gen, ep, body)
        raise errors.NotFound(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")

    def _metric_names(self, service: str, endpoint: str) -> tuple[str, str]:
        """Labels for a request that did not resolve: names a caller made up must not grow
        the metric series without bound, so only names the registry knows are kept."""
        svc = self.registry.services.get(service)
        if svc is None:
            return _UNKNOWN, _UNKNOWN
        if any(endpoint in gen.endpoints for gen in svc.loaded.values()):
            return service, endpoint
        return service, _UNKNOWN

    def _log(
        self,
        verb: str,
        service: str,
        endpoint: str,
        generation: str,
        protocol: str,
        key_id: str | None,
        peer: str | None,
        body: dict[str, Any],
        out: dict[str, Any] | None,
        status: str,
        error: str | None,
        enriched: Any = None,
    ) -> None:
        assert self.querylog is not None
        entry: dict[str, Any] = {
            "service": service,
            "endpoint": endpoint,
            "verb": verb,
            "generation": generation,
            "protocol": protocol,
            "apiKeyId": key_id,
            "peer": peer,
            "status": status,
        }
        if error is not None:
            entry["error"] = error
        if verb in FLAT_VERBS:  # function arguments, SQL parameters: `exclude` applies to both
            entry["arguments"] = body
        elif verb.startswith("lookup"):
            items = body.get("items")
            entry["data"] = (
                body.get("data")
                if verb == "lookup"
                else [i.get("data") for i in items if isinstance(i, dict)]
                if isinstance(items, list)
                else None
            )
        else:
            entry["context"] = body.get("context")
            if verb == "predict":
                entry["features"] = body.get("features")
            else:
                items = body.get("items")
                if isinstance(items, list):
                    items = [i for i in items if isinstance(i, dict)]
                    entry["items"] = [i.get("features") for i in items]
                    if any("context" in i for i in items):  # one per item, in order (null where none)
                        entry["itemContexts"] = [i.get("context") for i in items]
                else:
                    entry["items"] = None
        if enriched is not None:  # the features the model saw, after enrichment
            entry["enriched" if verb == "predict" else "enrichedItems"] = enriched
        if out is not None:
            entry["timing"] = out["timing"]
            if verb == "run":
                entry["response"] = orjson.Fragment(out["response"])
            elif verb == "query":  # the size of the answer, not its rows: a query log is not a copy of the database
                entry["result"] = (
                    {"columns": out["columns"], "rowCount": len(out["rows"])}
                    if "rows" in out
                    else {"updatedRows": out["updatedRows"]}
                )
            else:
                entry["result" if verb == "predict" else "results"] = out.get("result", out.get("results"))
        self.querylog.record(entry)

    async def predict_on(self, gen: Generation, ep: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter_ns()
        codec = _codec(gen, ep)
        task = expl.job(ep.spec, body.get("explanations"))
        if "features" not in body:
            raise errors.BadRequest("the body needs 'features': an object of feature name -> value")
        features, ignored, enrich_us = await _enrich(ep, body["features"])
        if ignored is None:
            row = codec.row(features, max_string=self.limits.max_string_chars)
            t1 = time.perf_counter_ns()
            assert ep.pool is not None
            out = await ep.pool.submit([expl.wrap(row, task)], 1)
            t2 = time.perf_counter_ns()
            result = codec.results(out.result)[0]
            wait, compute = out.wait_us, out.compute_us
        else:
            t1 = t2 = time.perf_counter_ns()
            result, wait, compute = _ignored(ignored), 0, 0
        if ep.enricher is not None and body.get("returnEnriched"):
            result["enrichedFeatures"] = features
        timing = _timing(t0, t1, t2, time.perf_counter_ns(), wait, compute)
        if ep.enricher is not None:
            timing["enrich"] = enrich_us
        return {
            "result": result,
            "timing": timing,
            "apiContext": _context(gen, ep.spec.id),
            "_enriched": features if ep.enricher is not None else None,
        }

    async def predict_multi_on(self, gen: Generation, ep: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter_ns()
        codec = _codec(gen, ep)
        task = expl.job(ep.spec, body.get("explanations"))
        items = body.get("items")
        if not isinstance(items, list):
            raise errors.BadRequest("the body needs 'items': a list of {\"features\": {...}}")
        if len(items) > self.limits.max_items:
            raise errors.PayloadTooLarge(
                f"{len(items)} items in one call; the limit is {self.limits.max_items} (--max-items)"
            )
        expl.check_cost(ep.spec, task, len(items))
        rows = []
        max_string = self.limits.max_string_chars
        enricher = ep.enricher
        ignored: dict[int, str] = {}
        enriched: list[Any] = []
        enrich_us = 0.0
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise errors.BadRequest(f"items[{i}] must be an object with 'features'")
        if enricher is not None:
            t = time.perf_counter_ns()
            enrichments = (_enrich(ep, it.get("features"), f"items[{i}]: ") for i, it in enumerate(items))
            if enricher.local:  # index lookups: nothing to wait for, so no task per row
                done = [await e for e in enrichments]
            else:  # concurrently: a table lookup waits for its database
                done = await asyncio.gather(*enrichments)
            enrich_us = (time.perf_counter_ns() - t) / 1000
        for i, item in enumerate(items):
            features = item.get("features")
            if enricher is not None:
                features, reason, _ = done[i]
                enriched.append(features)
                if reason is not None:
                    ignored[i] = reason
                    continue
            rows.append(expl.wrap(codec.row(features, where=f"items[{i}]: ", max_string=max_string), task))
        t1 = time.perf_counter_ns()
        if rows:
            assert ep.pool is not None
            out = await ep.pool.submit(rows, len(rows))
            results, wait, compute = codec.results(out.result), out.wait_us, out.compute_us
        else:
            results, wait, compute = [], 0, 0
        t2 = time.perf_counter_ns()
        if ignored:
            predicted = iter(results)
            results = [_ignored(ignored[i]) if i in ignored else next(predicted) for i in range(len(items))]
        if enricher is not None and body.get("returnEnriched"):
            for result, features in zip(results, enriched, strict=True):
                result["enrichedFeatures"] = features
        timing = _timing(t0, t1, t2, time.perf_counter_ns(), wait, compute)
        if enricher is not None:
            timing["enrich"] = enrich_us
        return {
            "results": results,
            "timing": timing,
            "apiContext": _context(gen, ep.spec.id),
            "_enriched": enriched if enricher is not None else None,
        }

    def lookup_on(self, gen: Generation, ep: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """`{"data": {keys}}` -> `{"results": [{"data": {...}}]}` (a list, as Dataiku answers)."""
        t0 = time.perf_counter_ns()
        lookup = _lookup(gen, ep)
        if "data" not in body:
            raise errors.BadRequest("the body needs 'data': an object of key column -> value")
        result = lookup.lookup(body["data"])
        return {
            "results": [result],
            "timing": {"lookup": (time.perf_counter_ns() - t0) / 1000},
            "apiContext": _context(gen, ep.spec.id),
        }

    def lookup_multi_on(self, gen: Generation, ep: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """`{"items": [{"data": {keys}}, ...]}` -> one result per item, in order."""
        t0 = time.perf_counter_ns()
        lookup = _lookup(gen, ep)
        items = body.get("items")
        if not isinstance(items, list):
            raise errors.BadRequest("the body needs 'items': a list of {\"data\": {...}}")
        if len(items) > self.limits.max_items:
            raise errors.PayloadTooLarge(
                f"{len(items)} items in one call; the limit is {self.limits.max_items} (--max-items)"
            )
        results = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise errors.BadRequest(f"items[{i}] must be an object with 'data'")
            results.append(lookup.lookup(item.get("data"), f"items[{i}]: "))
        return {
            "results": results,
            "timing": {"lookup": (time.perf_counter_ns() - t0) / 1000},
            "apiContext": _context(gen, ep.spec.id),
        }

    async def run_on(self, gen: Generation, ep: Endpoint, arguments: dict[str, Any]) -> dict[str, Any]:
        if ep.spec.type != "function" or ep.pool is None:
            raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a function")
        out = await ep.pool.submit(arguments)
        return {
            "response": out.result,  # JSON bytes, serialised by the worker
            "timing": {"wait": out.wait_us, "execution": out.compute_us},
            "apiContext": _context(gen, ep.spec.id),
        }

    async def query_on(
        self, gen: Generation, ep: Endpoint, parameters: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Runs an SQL endpoint's statements with `parameters`; a dry run rolls back."""
        if ep.spec.type != "sql" or ep.pool is None:
            raise errors.BadRequest(
                f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not an SQL query"
            )
        out = await ep.pool.submit((parameters, dry_run))
        return {
            **out.result,
            "timing": {"wait": out.wait_us, "execution": out.compute_us},
            "apiContext": _context(gen, ep.spec.id),
        }

    def status(self) -> dict[str, Any]:
        ready, reasons = self.readiness()
        return {
            "ready": ready,
            "notReady": reasons,
            "services": self.registry.status(),
            "supervisor": {k: v for k, v in self.registry.sup.status().items() if k != "pools"},
            **{name: section() for name, section in self.registry.status_sections.items()},
        }

    def readiness(self) -> tuple[bool, list[str]]:
        if self.draining:
            return False, ["draining: the node is shutting down (SIGTERM)"]
        return self.registry.readiness()


def _codec(gen: Generation, ep: Endpoint) -> Any:
    if ep.codec is None:
        raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a prediction")
    return ep.codec


def _how_to_dispatch(verb: str, protocol: str) -> str:
    """Where the caller of `verb` over `protocol` puts a dispatch key."""
    if protocol.startswith("oip"):
        return 'the request parameter "dispatch_key"'
    if protocol.startswith("grpc"):
        return "dispatch.dispatch_key (the request's Dispatch field)"
    if verb in FLAT_VERBS:  # the body is the arguments
        return f"the header X-Dispatch-Key (for {verb}, dispatch travels in headers)"
    return '"dispatch": {"dispatchKey": ...} in the body'


def _lookup(gen: Generation, ep: Endpoint) -> LookupEndpoint:
    if ep.lookup is None:
        raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a lookup")
    return ep.lookup


async def _enrich(ep: Endpoint, features: Any, where: str = "") -> tuple[Any, str | None, float]:
    """The features completed by the endpoint's enrichment, the reason to ignore the row,
    and the time it took (µs)."""
    if ep.enricher is None:
        return features, None, 0.0
    t0 = time.perf_counter_ns()
    out, reason = await ep.enricher.apply(features, where)
    return out, reason, (time.perf_counter_ns() - t0) / 1000


def _ignored(reason: str) -> dict[str, Any]:
    return {"ignored": True, "ignoreReason": reason}


def _timing(t0: int, t1: int, t2: int, t3: int, wait_us: int, compute_us: int) -> dict[str, float]:
    return {
        "preProcessing": (t1 - t0) / 1000,
        "wait": float(wait_us),
        "prediction": float(compute_us),
        "postProcessing": (t3 - t2) / 1000,
        "total": (t3 - t0) / 1000,
    }


_DEFAULT_LIMITS = Limits()


def loads_body(raw: bytes, limits: Limits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """Parses a JSON request body; an empty body is `{}` (the Dataiku client sends none).

    Refuses bodies nested deeper than `limits.max_json_depth` and strings (values or keys)
    longer than `limits.max_string_chars`. Only a body holding more brackets than the depth
    limit can nest past it, and only one longer than the string limit can hold a longer
    string, so the walk runs on big bodies only: a small body pays two `bytes.count`.
    """
    if not raw or raw.isspace():
        return {}
    depth, chars = limits.max_json_depth, limits.max_string_chars
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson's own, at 1024
            raise errors.BadRequest(
                f"the JSON body is nested more than {depth} levels deep; the limit is {depth} (--max-json-depth)"
            ) from None
        body = _loads_nan(raw) if b"NaN" in raw or b"Infinity" in raw else None
        if body is None:
            raise errors.BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    deep = len(raw) > 2 * depth and raw.count(b"[") + raw.count(b"{") > depth
    long = len(raw) > chars
    if (deep or long) and _too_big(body, depth if deep else MAX_JSON_DEPTH_CAP, chars if long else len(raw)):
        what, size, where = _find(body, depth, chars)
        if what == "depth":
            raise errors.BadRequest(
                f"the JSON body is nested more than {depth} levels deep (at {where}); "
                f"the limit is {depth} (--max-json-depth)"
            )
        raise errors.BadRequest(
            f"the {what} at {where} is {size} characters long; the limit is {chars} (--max-string-chars)"
        )
    return body


def _loads_nan(raw: bytes) -> Any:
    """dataikuapi sends float('nan') (what `df.to_dict('records')` holds for a missing value)
    as a bare `NaN`, which is not JSON and which orjson refuses: read it as null, a missing
    value. Infinity stays refused. None when the body is invalid for another reason."""

    def constant(name: str) -> None:
        if name != "NaN":
            raise errors.BadRequest(f"the body is not valid JSON: {name} is not a number JSON can carry")

    try:
        return json.loads(raw, parse_constant=constant)
    except (ValueError, RecursionError):
        return None


def _too_big(obj: dict[str, Any] | list[Any], depth_left: int, max_chars: int) -> bool:
    """Whether `obj` holds a container more than `depth_left - 1` levels below it, or a
    string or key longer than `max_chars`. The fast pass: where is `_find`'s job."""
    if type(obj) is dict:
        if obj and max(map(len, obj)) > max_chars:
            return True
        values: Any = obj.values()
    else:
        values = obj
    for v in values:
        t = type(v)
        if t is str:
            if len(v) > max_chars:
                return True
        elif t is dict or t is list:
            if depth_left <= 1 or _too_big(v, depth_left - 1, max_chars):
                return True
    return False


def _find(obj: Any, depth_left: int, max_chars: int) -> tuple[str, int, str]:
    """What `_too_big` found and where: `("depth" | "string" | "key", length, path)`."""
    path: list[str | int] = []
    while True:
        items = obj.items() if type(obj) is dict else enumerate(obj)
        for k, v in items:
            if isinstance(k, str) and len(k) > max_chars:
                return "key", len(k), _path([*path, k])
            if type(v) is str and len(v) > max_chars:
                return "string", len(v), _path([*path, k])
            if (type(v) is dict or type(v) is list) and (depth_left <= 1 or _too_big(v, depth_left - 1, max_chars)):
                path.append(k)
                if depth_left <= 1:
                    return "depth", 0, _path(path)
                obj, depth_left = v, depth_left - 1
                break
        else:
            raise AssertionError("_find called on a body _too_big accepts")


def _path(parts: list[str | int], shown: int = 6) -> str:
    """`items[3].features.name`; long names shortened, deep paths cut."""
    out = ""
    for part in parts[:shown]:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= 40 else part[:40] + "..."
            out += ("." if out else "") + (name if name.isidentifier() else repr(name))
    if len(parts) > shown:
        out += f"... ({len(parts) - shown} more levels)"
    return out or "the top level"
