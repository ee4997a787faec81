"""Services, their loaded generations, and which generation answers a request.

A service's *mapping* says which generations serve and with what probability
(`{"mode": "random"|"hash", "entries": [{"generation", "proba"}]}`); one generation
serving everything is a mapping of one entry. `resolve` picks the generation of a request:
`dispatch.forcedGeneration` wins, else a hash of `dispatch.dispatchKey` (hash mode), else
a random draw. Deciding *what* serves (push, activation, test queries) is the admin plane's
job (:mod:`node.admin`); this module only loads, unloads and routes.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from apz.manifest import parse_query_log
from apz.specs import EndpointSpec, Manifest, QueryLogSpec, SqlSpec
from apz.sqlparams import parse as parse_sql
from apz.vocab import ID_RE, PackageError
from node import connections, errors
from node.auth import ApiKeys
from node.datasets import Dataset, load_dataset
from node.features import CustomCodec, FeatureCodec
from node.lookup import Enricher, LookupEndpoint, TableSource, table_statement
from node.querylog import QueryLog
from node.storage import ServiceState, Storage, StoredGeneration
from node.supervisor import settings as pool_settings
from node.supervisor.pool import Pool
from node.supervisor.poolkey import PoolKey
from node.supervisor.supervisor import Supervisor
from node.worker import protocol as wp
from node.worker.spec import WorkerSpec

log = logging.getLogger("node.registry")

# Endpoint kinds served by a worker pool: the worker op, and whether queued requests batch.
# Lookup endpoints have no pool: the front answers them from an index (node/lookup.py).
_ENRICH_POOL = {"floor": 1, "cruise": 1, "ceil": 4, "queue": 256}  # per enrichment table (connections)
_OPS = {
    "prediction": (wp.OP_PREDICT, True),
    "custom-prediction": (wp.OP_PREDICT, True),
    "function": (wp.OP_CALL, False),
    "sql": (wp.OP_QUERY, False),
}


@dataclass(slots=True)
class Endpoint:
    spec: EndpointSpec
    pool: Pool | None
    codec: FeatureCodec | None
    lookup: LookupEndpoint | None = None
    enricher: Enricher | None = None
    enrich_pools: list[Pool] = field(default_factory=list)  # SQL pools reading enrichment tables


@dataclass(slots=True)
class Generation:
    service: str
    version: str
    stored: StoredGeneration
    manifest: Manifest
    path: Path
    endpoints: dict[str, Endpoint] = field(default_factory=dict)


@dataclass(slots=True)
class Service:
    id: str
    state: ServiceState
    loaded: dict[str, Generation] = field(default_factory=dict)
    # Generations the last switch took traffic from, still loaded (workers at floor) so that
    # a rollback to them is instant; the admin plane retires them at the next switch or
    # after --keep-warm seconds.
    warm: dict[str, Generation] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _cum: list[float] = field(default_factory=list)
    _versions: list[str] = field(default_factory=list)

    def route(self) -> None:
        """Precomputes the cumulative probabilities of the mapping for dispatch."""
        entries = (self.state.mapping or {}).get("entries", [])
        total, self._cum, self._versions = 0.0, [], []
        for e in entries:
            if e["proba"] > 0:
                total += e["proba"]
                self._cum.append(total)
                self._versions.append(e["generation"])

    def pick(self, dispatch: Any) -> str:
        versions = self._versions
        if not versions:
            raise errors.NotFound(f"service {self.id!r} has no active generation")
        if len(versions) == 1:
            return versions[0]
        if (self.state.mapping or {}).get("mode") == "hash":
            key = dispatch.get("dispatchKey") if isinstance(dispatch, dict) else None
            if key is None or key == "":
                raise errors.DispatchKeyMissing(self.id)
            digest = hashlib.blake2b(str(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2**64 * self._cum[-1]
        else:
            u = random.random() * self._cum[-1]
        return versions[min(bisect.bisect_right(self._cum, u), len(versions) - 1)]


class Registry:
    def __init__(
        self,
        storage: Storage,
        supervisor: Supervisor,
        *,
        onnx_threads: int = 1,
        connections_file: Path | None = None,
        querylog: QueryLog | None = None,
        allow_empty: bool = True,
    ) -> None:
        self.keys = ApiKeys(storage.root)
        self.querylog = querylog  # takes each loaded service's log policy
        self.storage = storage
        self.data_dir = storage.root
        self.sup = supervisor
        self.onnx_threads = onnx_threads
        self.connections_file = connections_file or connections.default_path(storage.root)
        self.services: dict[str, Service] = {}
        self._loads = 0
        # Readiness beyond the pools: a node with nothing to serve is not ready unless
        # allowed (`serve --allow-empty`); gates (the repository's first sync) add reasons.
        self.allow_empty = allow_empty
        self.gates: list[Callable[[], str | None]] = []
        self.status_sections: dict[str, Callable[[], Any]] = {}  # more sections of /admin/status

    def service(self, service: str, *, create: bool = False) -> Service:
        svc = self.services.get(service)
        if svc is None:
            if not create:
                raise errors.NotFound(f"service {service!r} is not deployed on this node")
            if not ID_RE.fullmatch(service):  # it names folders of the data dir
                raise errors.BadRequest(f"bad service id {service!r}: letters, digits, '_' and '-' only")
            svc = self.services[service] = Service(service, ServiceState())
        return svc

    # ---- loading -----------------------------------------------------------------------
    async def load(
        self, service: str, stored: StoredGeneration, *, incoming: bool = False, sizes: dict[str, int] | None = None
    ) -> Generation:
        """Starts the pools of a stored generation (floor workers loaded and warm).
        `incoming`: it loads beside serving generations, its workers at a lower priority.
        `sizes`: workers to start per endpoint (the traffic it is about to take needs them)."""
        path = self.storage.generation_dir(service, stored)
        try:
            manifest = self.storage.manifest_of(service, stored)
        except (OSError, PackageError) as exc:  # the data dir was tampered with, or lost a file
            raise errors.BadRequest(f"{service} {stored.version} cannot be loaded: {exc}") from None
        self._loads += 1
        gen = Generation(service, stored.version, stored, manifest, path)
        # Datasets load in a thread while the pools start: a big one takes seconds, and the
        # event loop keeps serving every other service meanwhile.
        in_front = asyncio.ensure_future(asyncio.to_thread(_front_parts, manifest, path))

        async def load_endpoint(ep: EndpointSpec) -> tuple[str, Endpoint]:
            if ep.type not in _OPS:
                lookups, _ = await in_front
                return ep.id, Endpoint(ep, None, None, lookup=lookups[ep.id])
            settings = pool_settings.resolve(self.data_dir, service, ep.id, ep.pool)
            op, batchable = _OPS[ep.type]
            key = PoolKey(service, ep.id, stored.version)
            if key in self.sup.pools:  # the same version, new content, loading beside the old
                key = PoolKey(service, ep.id, stored.version, instance=self._loads)
            spec = WorkerSpec(str(path), ep, self.onnx_threads, self._dsn(ep.sql, ep.id))
            size = (sizes or {}).get(ep.id)
            pool = await self.sup.add_pool(
                key, spec, settings, op=op, batchable=batchable, incoming=incoming, size=size
            )
            endpoint = Endpoint(ep, pool, None)
            if ep.type == "prediction":
                endpoint.codec = FeatureCodec(ep)
            elif ep.type == "custom-prediction":
                endpoint.codec = CustomCodec(ep)
            try:
                if ep.enrich:
                    await self._enricher(endpoint, key, path, (await in_front)[1], incoming)
            except BaseException:
                await asyncio.gather(*(self.sup.remove_pool(p, drain=False) for p in [pool, *endpoint.enrich_pools]))
                raise
            return ep.id, endpoint

        results = await asyncio.gather(*(load_endpoint(e) for e in manifest.endpoints.values()), return_exceptions=True)
        await asyncio.gather(in_front, return_exceptions=True)  # observed even if no endpoint waited for it
        for r in results:
            if isinstance(r, tuple):
                gen.endpoints[r[0]] = r[1]
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.unload(gen, drain=False)
            if isinstance(failure, errors.ApiNodeError):
                raise errors.BadRequest(f"{service} {stored.version} failed to load: {failure.message}") from failure
            raise failure
        log.info("loaded %s %s (%d endpoints)", service, stored.version, len(gen.endpoints))
        return gen

    def _dsn(self, sql: SqlSpec | None, endpoint: str) -> str | None:
        """The DSN of the node connection a sql endpoint names (None: no connection)."""
        if sql is None or sql.connection is None:
            return None
        return str(connections.resolve(self.connections_file, sql.connection, endpoint)["dsn"])

    async def _enricher(
        self, endpoint: Endpoint, key: PoolKey, path: Path, datasets: dict[str, Dataset], incoming: bool
    ) -> None:
        """The endpoint's enrichment: bundled datasets (indexed already), and one SQL pool
        per table of a node connection."""
        ep = endpoint.spec
        tables: dict[int, TableSource] = {}
        for i, e in enumerate(ep.enrich):
            if e.table is None:
                continue
            name = f"{ep.id}.enrich{i}"
            sql = SqlSpec(statements=(parse_sql(table_statement(e)),), connection=e.connection)
            spec = WorkerSpec(
                str(path), EndpointSpec(id=name, type="sql", sql=sql), self.onnx_threads, self._dsn(sql, ep.id)
            )
            settings = pool_settings.resolve(self.data_dir, key.service, name, dict(_ENRICH_POOL))
            pool = await self.sup.add_pool(
                key.enrichment(i), spec, settings, op=wp.OP_QUERY, batchable=False, incoming=incoming
            )
            endpoint.enrich_pools.append(pool)
            tables[i] = TableSource(pool, e.table)
        endpoint.enricher = Enricher.build(ep.enrich, datasets, tables)

    async def unload(self, gen: Generation, *, drain: bool) -> None:
        await asyncio.gather(*(self.sup.remove_pool(p, drain=drain) for p in _pools(gen)))

    def park(self, gen: Generation, parked: bool) -> None:
        """A warm generation keeps `floor` workers per pool; unparked, it serves as before."""
        for pool in _pools(gen):
            pool.park(parked)

    async def start(self) -> None:
        """Loads what the data dir says should serve (on node start)."""
        states = self.storage.load_states()
        self.storage.clean(states)
        for sid, state in states.items():
            svc = self.services[sid] = Service(sid, state)
            for entry in (state.mapping or {}).get("entries", []):
                stored = state.generations.get(entry["generation"])
                if stored is None:
                    log.error("%s: mapped generation %s is not stored", sid, entry["generation"])
                    continue
                try:
                    svc.loaded[stored.version] = await self.load(sid, stored)
                except errors.ApiNodeError as exc:
                    log.error("%s", exc.message)
            svc.route()
            self._refresh_keys(svc)

    async def close(self) -> None:
        for svc in self.services.values():
            gens = [*svc.loaded.values(), *svc.warm.values()]
            await asyncio.gather(*(self.unload(g, drain=False) for g in gens))

    # ---- routing -----------------------------------------------------------------------
    def apply_mapping(self, svc: Service, mapping: dict[str, Any] | None) -> None:
        svc.state.mapping = mapping
        svc.route()
        self._refresh_keys(svc)

    def _refresh_keys(self, svc: Service) -> None:
        """The service's API keys are those of the newest serving generation's package."""
        serving = [svc.loaded[v] for v in self.serving(svc) if v in svc.loaded]
        newest = max(serving, key=lambda g: g.stored.stored_at, default=None)
        self.keys.set_service(svc.id, newest.manifest.api_keys if newest else ())
        if self.querylog is not None:
            override = self.data_dir / "config" / "services" / svc.id / "query_log.json"
            try:
                if override.exists():
                    policy = parse_query_log(orjson.loads(override.read_bytes()), str(override))
                else:  # the package's, validated when its manifest was read
                    policy = (newest.manifest.query_log if newest else None) or QueryLogSpec()
                self.querylog.set_policy(svc.id, policy)
            except ValueError as exc:
                raise errors.BadRequest(str(exc)) from None

    def resolve(self, service: str, endpoint: str, dispatch: Any = None) -> tuple[Generation, Endpoint]:
        svc = self.services.get(service)
        if svc is None:
            raise errors.NotFound(f"service {service!r} is not deployed on this node")
        if not svc.state.enabled:
            raise errors.NotFound(f"service {service!r} is disabled on this node")
        forced = None
        if dispatch is not None:
            if not isinstance(dispatch, dict):
                raise errors.BadRequest("'dispatch' must be an object")
            forced = dispatch.get("forcedGeneration")
            if forced is not None and not isinstance(forced, str):
                raise errors.BadRequest("dispatch.forcedGeneration must be a string: the name of a generation")
        if forced:
            gen = svc.loaded.get(forced)
            if gen is None:
                raise errors.NotFound(f"generation {forced!r} of service {service!r} is not loaded")
        else:
            version = svc.pick(dispatch)
            gen = svc.loaded.get(version)
            if gen is None:
                raise errors.NotReady(f"generation {version!r} of service {service!r} is not loaded")
        ep = gen.endpoints.get(endpoint)
        if ep is None:
            known = ", ".join(sorted(gen.endpoints))
            raise errors.NotFound(f"service {service!r} has no endpoint {endpoint!r} (it has: {known})")
        return gen, ep

    def serving(self, svc: Service) -> list[str]:
        return [e["generation"] for e in (svc.state.mapping or {}).get("entries", [])]

    # ---- visible state -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for svc in self.services.values():
            out[svc.id] = {
                "active": next(iter(self.serving(svc)), None),
                "mapping": svc.state.mapping,
                "enabled": svc.state.enabled,
                "generations": {
                    v: {ep_id: _endpoint_status(ep) for ep_id, ep in g.endpoints.items()} for v, g in svc.loaded.items()
                },
                "warm": {
                    v: {ep_id: _endpoint_status(ep) for ep_id, ep in g.endpoints.items()} for v, g in svc.warm.items()
                },
            }
        return out

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = [r for r in (gate() for gate in self.gates) if r]
        if not self.allow_empty and not any(self.serving(s) for s in self.services.values()):
            reasons.append("nothing to serve: no service has an active generation (serve --allow-empty to be ready so)")
        for svc in self.services.values():
            if not svc.state.enabled:
                continue
            for version in self.serving(svc):
                gen = svc.loaded.get(version)
                if gen is None:
                    reasons.append(f"{svc.id}@{version}: not loaded")
                    continue
                for ep_id, ep in gen.endpoints.items():
                    if ep.pool is not None and not ep.pool.ready:
                        reasons.append(f"{svc.id}/{ep_id}@{version}: {ep.pool.not_ready_reason}")
        return not reasons, reasons


def _pools(gen: Generation) -> list[Pool]:
    return [p for e in gen.endpoints.values() for p in (e.pool, *e.enrich_pools) if p is not None]


def _endpoint_status(ep: Endpoint) -> dict[str, Any]:
    if ep.pool is None:
        return {"type": ep.spec.type, **(ep.lookup.describe() if ep.lookup else {})}
    return {"type": ep.spec.type, **ep.pool.status()}


def _front_parts(manifest: Manifest, path: Path) -> tuple[dict[str, LookupEndpoint], dict[str, Dataset]]:
    """What the front process serves itself for a generation: lookup endpoints, and the
    bundled datasets enrichment reads (each read once, its key indexes built here, in a
    thread, rather than on the event loop)."""
    datasets: dict[str, Dataset] = {}

    def dataset(name: str) -> Dataset:
        if name not in datasets:
            d = manifest.datasets[name]
            datasets[name] = load_dataset(name, path / d.path, d.format, d.schema)
        return datasets[name]

    lookups: dict[str, LookupEndpoint] = {}
    for ep in manifest.endpoints.values():
        if ep.lookup is not None:
            lookups[ep.id] = LookupEndpoint(dataset(ep.lookup.dataset), ep.lookup)
        for e in ep.enrich:
            if e.dataset is not None:
                dataset(e.dataset).index(tuple(e.keys))
    return lookups, datasets
