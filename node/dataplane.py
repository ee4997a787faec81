"""The data plane: every user operation, typed, whatever the transport.

Transports decode their wire format into the typed requests of :mod:`node.ops`, call one
method per operation (`predict`, `predict_multi`, `run`, `lookup`, `lookup_multi`,
`query`) and encode the typed result. Each method is the same instrumentation
(`_instrumented`: the API key, the in-flight gauge, the generation's resolution, the queue's
early refusal, metrics and the query log, recorded once) around the operation proper
(`predict_on`, ..., predictions being :mod:`node.predict`'s), which runs on a resolved
endpoint; the deploy's test queries call those directly (`on`, from :mod:`node.admin`). The
Open Inference Protocol resolves its model itself and hands rows as columns to
`predict_rows` (:mod:`node.oip.plane`). Lookups and enrichment run in the front process, from
indexes of the bundled datasets (:mod:`node.lookup`): no worker round trip.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from node import errors, ops, predict, queryentry
from node.auth import ApiKeys
from node.features import MAX_STRING_CHARS
from node.lookup import LookupEndpoint
from node.metrics import Metrics
from node.querylog import QueryLog
from node.registry import Endpoint, Generation, Registry
from node.supervisor.pool import Pool

R = TypeVar("R", bound=ops.Result)
Q = TypeVar("Q", bound=ops.Request)
FLAT_VERBS = ("run", "query")  # their request is the arguments: the Dataiku API puts dispatch in headers


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


class Resolved(NamedTuple):
    """An endpoint of the generation that answers, for a caller whose key was checked (a
    tuple: built on every call, and cheaper so than a frozen dataclass)."""

    gen: Generation
    ep: Endpoint
    key_id: str | None


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

    # ---- the operations ----------------------------------------------------------------
    async def predict(self, req: ops.PredictRequest, caller: ops.Caller) -> ops.PredictResult:
        return await self._instrumented("predict", req, caller, self.predict_on)

    async def predict_multi(self, req: ops.PredictMultiRequest, caller: ops.Caller) -> ops.PredictMultiResult:
        return await self._instrumented("predict-multi", req, caller, self.predict_multi_on)

    async def predict_rows(
        self, req: ops.PredictRowsRequest, caller: ops.Caller, resolved: Resolved
    ) -> ops.PredictMultiResult:
        """A predict-multi on an endpoint its caller resolved and whose key it checked
        (the Open Inference Protocol, which resolves its model by name and version)."""
        return await self._instrumented("predict-multi", req, caller, self.predict_rows_on, resolved)

    async def run(self, req: ops.RunRequest, caller: ops.Caller) -> ops.RunResult:
        return await self._instrumented("run", req, caller, self.run_on)

    async def lookup(self, req: ops.LookupRequest, caller: ops.Caller) -> ops.LookupResult:
        """One item is a lookup, any other count a lookup-multi (gRPC's `Lookup` takes a list)."""
        verb = "lookup" if len(req.items) == 1 else "lookup-multi"
        return await self._instrumented(verb, req, caller, self.lookup_on)

    async def lookup_multi(self, req: ops.LookupRequest, caller: ops.Caller) -> ops.LookupResult:
        return await self._instrumented("lookup-multi", req, caller, self.lookup_multi_on)

    async def query(self, req: ops.QueryRequest, caller: ops.Caller) -> ops.QueryResult:
        return await self._instrumented("query", req, caller, self.query_on)

    async def _instrumented(
        self,
        verb: str,
        req: Q,
        caller: ops.Caller,
        run: Callable[[Generation, Endpoint, Q], Awaitable[R]],
        resolved: Resolved | None = None,
    ) -> R:
        """Runs one operation, counted in flight until it is answered, its outcome and
        latency recorded once (metrics, query log)."""
        service, endpoint = req.service, req.endpoint
        inflight = self.metrics.inflight
        inflight.enter((service, endpoint))
        t0 = time.perf_counter()
        generation = ""
        key_id = resolved.key_id if resolved is not None else None
        try:
            try:
                if resolved is None:
                    key_id = self.keys.check(service, caller.api_key, caller.peer)
                    resolved = self._resolve(verb, req, caller, key_id)
                gen, ep = resolved.gen, resolved.ep
                generation = gen.version
                if ep.pool is not None:  # a full queue refuses before decoding, enriching, validating
                    ep.pool.refuse_if_full()
                result = await run(gen, ep, req)
            except errors.ApiNodeError as exc:
                outcome = errors.kind_of(exc).error_type
                m_service, m_endpoint = (service, endpoint) if generation else self._metric_names(service, endpoint)
                self.metrics.observe(
                    m_service, m_endpoint, generation, caller.protocol, outcome, time.perf_counter() - t0
                )
                if self.querylog is not None and outcome not in ("UNAUTHORIZED", "FORBIDDEN"):
                    self.querylog.record(
                        queryentry.entry(
                            verb,
                            req,
                            None,
                            generation=generation,
                            caller=caller,
                            key_id=key_id,
                            status=outcome,
                            error=exc.message,
                        )
                    )
                raise
            timing = result.timing
            wait = int(timing.wait) if timing.wait is not None else 0  # whole µs, from the pool
            self.metrics.observe(
                service,
                endpoint,
                generation,
                caller.protocol,
                "ok",
                time.perf_counter() - t0,
                wait,
                int(timing.compute),
            )
            if self.querylog is not None:
                self.querylog.record(
                    queryentry.entry(
                        verb, req, result, generation=generation, caller=caller, key_id=key_id, status="ok"
                    )
                )
            return result
        finally:
            inflight.leave((service, endpoint))

    def _resolve(self, verb: str, req: ops.Request, caller: ops.Caller, key_id: str | None) -> Resolved:
        dispatch = getattr(req, "dispatch", None)
        try:
            gen, ep = self.registry.resolve(
                req.service, req.endpoint, dispatch.as_registry() if dispatch is not None else None
            )
        except errors.DispatchKeyMissing as exc:
            raise errors.DispatchKeyMissing(exc.service, _how_to_dispatch(verb, caller.protocol)) from None
        return Resolved(gen, ep, key_id)

    def refuse_early(
        self, service: str, endpoint: str, api_key: str | None, protocol: str, forced: bool = False
    ) -> errors.Overloaded | None:
        """The OVERLOADED refusal the ordinary path would give this call, decided from its
        service and endpoint alone (no body), or None when that cannot be known so (then the
        ordinary path serves or refuses it). A refusal returned is counted as the ordinary
        path counts it (the pool's rejected, the requests metric); nothing is raised.

        Known without the body only when the service serves one generation, the only one
        loaded (no dispatch can pick another pool), the caller forces none (`forced`), the
        node keeps no query log (its entry holds the request), and the caller's key is one
        the ordinary path accepts (a caller without one gets its 401 from there, and learns
        nothing of the service's load)."""
        t0 = time.perf_counter()
        sole = None if forced else self._sole_pool(service, endpoint)
        if sole is None:
            return None
        pool, version = sole
        refusal = pool.overload()
        if refusal is None or not self.keys.accepts(service, api_key):
            return None
        self._count_refusal(pool, service, endpoint, version, protocol, t0)
        return refusal

    def admit_early(
        self, service: str, endpoint: str, api_key: str | None, protocol: str
    ) -> errors.Overloaded | Callable[[], None] | None:
        """`refuse_early` for a request the front takes in before it is parsed (the HTTP
        connection handler, node.http.guard), which also counts what it lets in: the refusal;
        or, admitted, the function to call once the request is answered (until then it counts
        against the pool's front limit, `Pool.front_overload`); or None when the pool cannot
        be known from the URL, or the key is not accepted (the ordinary path decides)."""
        t0 = time.perf_counter()
        sole = self._sole_pool(service, endpoint)
        if sole is None:
            return None
        pool, version = sole
        refusal = pool.overload() or pool.front_overload()
        if not self.keys.accepts(service, api_key):
            return None
        if refusal is None:
            pool.front_admitted += 1
            return pool.front_done
        self._count_refusal(pool, service, endpoint, version, protocol, t0)
        return refusal

    def _count_refusal(self, pool: Pool, service: str, endpoint: str, version: str, protocol: str, t0: float) -> None:
        pool.stats.rejected += 1  # as `Pool.refuse_if_full` counts the refusals it raises
        self.metrics.observe(service, endpoint, version, protocol, "OVERLOADED", time.perf_counter() - t0)

    def _sole_pool(self, service: str, endpoint: str) -> tuple[Pool, str] | None:
        """The pool (and generation) every call of `endpoint` goes to, when the URL alone
        says: the service serves one generation, the only one loaded, and the node keeps no
        query log (its entry holds the request)."""
        if self.querylog is not None:
            return None
        svc = self.registry.services.get(service)
        if svc is None or not svc.state.enabled or len(svc.loaded) != 1:
            return None
        gen = next(iter(svc.loaded.values()))
        entries: list[dict[str, Any]] = (svc.state.mapping or {}).get("entries") or []
        if len(entries) != 1 or entries[0]["generation"] != gen.version:
            return None
        ep = gen.endpoints.get(endpoint)
        if ep is None or ep.pool is None:
            return None
        return ep.pool, gen.version

    def _served_endpoints(self) -> list[tuple[str, str]]:
        return [
            (s.id, ep) for s in list(self.registry.services.values()) for g in s.loaded.values() for ep in g.endpoints
        ]

    def _metric_names(self, service: str, endpoint: str) -> tuple[str, str]:
        """Labels for a request that did not resolve: names a caller made up must not grow
        the metric series without bound, so only names the registry knows are kept."""
        svc = self.registry.services.get(service)
        if svc is None:
            return _UNKNOWN, _UNKNOWN
        if any(endpoint in gen.endpoints for gen in svc.loaded.values()):
            return service, endpoint
        return service, _UNKNOWN

    # ---- on a resolved endpoint (no key, metrics or log) --------------------------------
    async def predict_on(self, gen: Generation, ep: Endpoint, req: ops.PredictRequest) -> ops.PredictResult:
        return await predict.predict(gen, ep, req, max_string=self.limits.max_string_chars)

    async def predict_multi_on(
        self, gen: Generation, ep: Endpoint, req: ops.PredictMultiRequest
    ) -> ops.PredictMultiResult:
        limits = self.limits
        return await predict.predict_multi(gen, ep, req, max_string=limits.max_string_chars, max_items=limits.max_items)

    async def predict_rows_on(
        self, gen: Generation, ep: Endpoint, req: ops.PredictRowsRequest
    ) -> ops.PredictMultiResult:
        limits = self.limits
        return await predict.predict_rows(gen, ep, req, max_string=limits.max_string_chars, max_items=limits.max_items)

    async def lookup_on(self, gen: Generation, ep: Endpoint, req: ops.LookupRequest) -> ops.LookupResult:
        """One item (`lookup`), or any other number of them (`lookup-multi`)."""
        if len(req.items) != 1:
            return await self.lookup_multi_on(gen, ep, req)
        t0 = time.perf_counter_ns()
        lookup = _lookup(gen, ep)
        data = req.items[0]
        if data is ops.MISSING:
            raise errors.BadRequest("the body needs 'data': an object of key column -> value")
        row = _lookup_row(lookup.lookup(data))
        return ops.LookupResult(
            [row], ops.Timing(lookup=(time.perf_counter_ns() - t0) / 1000), predict.api_context(gen, ep)
        )

    async def lookup_multi_on(self, gen: Generation, ep: Endpoint, req: ops.LookupRequest) -> ops.LookupResult:
        """One result per item, in order."""
        t0 = time.perf_counter_ns()
        lookup = _lookup(gen, ep)
        predict.check_items(len(req.items), self.limits.max_items)
        rows = [_lookup_row(lookup.lookup(_given(data), f"items[{i}]: ")) for i, data in enumerate(req.items)]
        return ops.LookupResult(
            rows, ops.Timing(lookup=(time.perf_counter_ns() - t0) / 1000), predict.api_context(gen, ep)
        )

    async def run_on(self, gen: Generation, ep: Endpoint, req: ops.RunRequest) -> ops.RunResult:
        if ep.spec.type != "function" or ep.pool is None:
            raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a function")
        out = await ep.pool.submit(req.arguments)
        # JSON bytes, serialised by the worker
        return ops.RunResult(
            out.result, ops.Timing(wait=out.wait_us, execution=out.compute_us), predict.api_context(gen, ep)
        )

    async def query_on(self, gen: Generation, ep: Endpoint, req: ops.QueryRequest) -> ops.QueryResult:
        """Runs an SQL endpoint's statements with the request's parameters; a dry run rolls back."""
        if ep.spec.type != "sql" or ep.pool is None:
            raise errors.BadRequest(
                f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not an SQL query"
            )
        out = await ep.pool.submit((req.parameters, req.dry_run))
        answer: dict[str, Any] = out.result  # node.worker.sql: {"columns", "rows"} or {"updatedRows"}
        return ops.QueryResult(
            ops.Timing(wait=out.wait_us, execution=out.compute_us),
            predict.api_context(gen, ep),
            columns=answer.get("columns"),
            rows=answer.get("rows"),
            updated_rows=answer.get("updatedRows"),
        )

    async def on(self, gen: Generation, ep: Endpoint, req: ops.Request) -> ops.Result:
        """Runs a request on a resolved endpoint, uncounted (a deploy's test queries)."""
        run: Any = {
            ops.PredictRequest: self.predict_on,
            ops.PredictMultiRequest: self.predict_multi_on,
            ops.PredictRowsRequest: self.predict_rows_on,
            ops.LookupRequest: self.lookup_on,
            ops.RunRequest: self.run_on,
            ops.QueryRequest: self.query_on,
        }[type(req)]
        result: ops.Result = await run(gen, ep, req)
        return result

    # ---- status ------------------------------------------------------------------------
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


def _given(x: Any) -> Any:
    return None if x is ops.MISSING else x


def _how_to_dispatch(verb: str, protocol: str) -> str:
    """Where the caller of `verb` over `protocol` puts a dispatch key."""
    if protocol.startswith("grpc"):
        return "dispatch.dispatch_key (the request's Dispatch field)"
    if verb in FLAT_VERBS:  # the body is the arguments
        return f"the header X-Dispatch-Key (for {verb}, dispatch travels in headers)"
    return '"dispatch": {"dispatchKey": ...} in the body'


def _lookup(gen: Generation, ep: Endpoint) -> LookupEndpoint:
    if ep.lookup is None:
        raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a lookup")
    return ep.lookup


def _lookup_row(found: dict[str, Any]) -> ops.LookupRow:
    return ops.LookupRow(found["data"], bool(found.get("ignored")), found.get("ignoreReason"), found.get("matches"))
