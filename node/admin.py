"""The admin plane: deploy operations in plain Python types, for both admin transports.

Push: the package is verified and unpacked beside what serves, loaded (its workers warm),
and its test queries played against it; only then is it committed to the data dir. A
package that fails anywhere leaves nothing behind and the node serving what it served.

Switching (activate, mapping, rollback) is zero-downtime: every generation of the new
mapping is loaded and tested first, the mapping is swapped in one step (requests already
resolved finish on the generation they resolved to), and generations left without traffic
drain their queues and in-flight requests before their workers stop. The generations a
switch takes traffic from stay loaded, warm (their pools at `floor`), until the next switch
or `keep_warm` seconds: a rollback to them starts no worker and runs no test again. A
generation loading beside serving ones loads at a lower priority (node.worker).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from apz.archive import read_manifest
from apz.vocab import PackageError
from node import errors, ops
from node.dataplane import DataPlane
from node.registry import Generation, Registry, Service
from node.storage import Storage, StoredGeneration, write_atomic
from node.supervisor import settings as pool_settings

log = logging.getLogger("node.admin")


class TestQueryCodec(Protocol):
    """How test queries are read and their answers shown: in a transport's format (the
    Dataiku JSON API's, node.http.codec), given by the composition root so that the admin
    plane does not import a transport."""

    def decode(self, kind: str, service: str, endpoint: str, body: dict[str, Any]) -> ops.Request: ...

    def encode(self, result: ops.Result) -> Any: ...


class AdminPlane:
    def __init__(
        self,
        registry: Registry,
        dataplane: DataPlane,
        storage: Storage,
        test_codec: TestQueryCodec,
        *,
        keep_warm: float = 600.0,
    ) -> None:
        self.registry = registry
        self.test_codec = test_codec
        self.dp = dataplane
        self.storage = storage
        self.keep_warm = keep_warm  # seconds a generation switched away from stays loaded (0: none)
        self._retiring: set[asyncio.Task[None]] = set()
        self._warm_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    # ---- test queries ------------------------------------------------------------------
    async def run_tests(self, gen: Generation) -> list[dict[str, Any]]:
        results = []
        for ep_id, ep in gen.endpoints.items():
            if not ep.spec.test_queries:
                continue
            try:
                queries = orjson.loads((gen.path / ep.spec.test_queries).read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                results.append(
                    {
                        "endpoint": ep_id,
                        "index": 0,
                        "ok": False,
                        "error": f"unreadable test queries: {exc}",
                    }
                )
                continue
            for i, body in enumerate(queries if isinstance(queries, list) else []):
                t0 = time.perf_counter()
                try:
                    # a test query is a body of the Dataiku API, and so is its answer
                    request = self.test_codec.decode(
                        ep.spec.type, gen.service, ep_id, body if isinstance(body, dict) else {}
                    )
                    if isinstance(request, ops.QueryRequest):  # rolled back: a test query writes nothing
                        request.dry_run = True
                    result = await self.dp.on(gen, ep, request)
                    out = self.test_codec.encode(result)
                    results.append(
                        {
                            "endpoint": ep_id,
                            "index": i,
                            "ok": True,
                            "latency_ms": (time.perf_counter() - t0) * 1000,
                            "response": out,
                        }
                    )
                except errors.ApiNodeError as exc:
                    kind = errors.kind_of(exc)
                    results.append(
                        {
                            "endpoint": ep_id,
                            "index": i,
                            "ok": False,
                            "error": f"{kind.error_type}: {exc.message}",
                            "latency_ms": (time.perf_counter() - t0) * 1000,
                        }
                    )
        return results

    async def _load_tested(
        self, service: str, stored: StoredGeneration, *, to_serve: bool = True
    ) -> tuple[Generation, list[dict[str, Any]]]:
        """Loads a generation and plays its test queries; refuses it if one fails.
        `to_serve`: it is about to take traffic (else only verified, at `floor`).

        A caller cancelled meanwhile (gRPC cancels a push whose client gave up; a shutdown)
        does not cut the load short: cut anywhere, it left pools running that nothing
        owned, their workers alive and holding slots until the node exited. The load ends
        in the background and what it loaded is then retired."""
        task = asyncio.create_task(self._load_and_test(service, stored, to_serve=to_serve))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._retire_abandoned)
            raise

    def _retire_abandoned(self, task: asyncio.Task[tuple[Generation, list[dict[str, Any]]]]) -> None:
        if not task.cancelled() and task.exception() is None:  # a failed load cleaned up after itself
            self._retire(task.result()[0])

    async def _load_and_test(
        self, service: str, stored: StoredGeneration, *, to_serve: bool
    ) -> tuple[Generation, list[dict[str, Any]]]:
        version = stored.version
        # Below the serving workers' priority when workers serve (any service's): they go first.
        serving = any(s.loaded for s in self.registry.services.values())
        # As many workers per endpoint as the generations serving now have: the traffic they
        # take over needs them, and a pool growing from `floor` under it would overflow.
        sizes: dict[str, int] = {}
        svc = self.registry.services.get(service)
        for gen_now in svc.loaded.values() if svc is not None and to_serve else ():
            for ep_id, ep in gen_now.endpoints.items():
                if ep.pool is not None:
                    sizes[ep_id] = max(sizes.get(ep_id, 0), ep.pool.size)
        gen = await self.registry.load(service, stored, incoming=serving, sizes=sizes)
        tests = await self.run_tests(gen)
        failed = [t for t in tests if not t["ok"]]
        if failed:
            await self.registry.unload(gen, drain=False)
            f = failed[0]
            raise errors.BadRequest(
                f"generation {version} of {service} failed test query #{f['index']} of endpoint "
                f"{f['endpoint']!r}: {f['error']} ({len(failed)} of {len(tests)} failed); not activated"
            )
        return gen, tests

    # ---- switching ---------------------------------------------------------------------
    def _check_mapping(self, svc: Service, mapping: dict[str, Any]) -> dict[str, Any]:
        mode = mapping.get("mode") or "random"
        if mode not in ("random", "hash"):
            raise errors.BadRequest(f"mapping mode must be 'random' or 'hash', got {mode!r}")
        entries = mapping.get("entries")
        if not isinstance(entries, list) or not entries:
            raise errors.BadRequest("a mapping needs at least one entry {generation, proba}")
        clean = []
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("generation"), str):
                raise errors.BadRequest(f"a mapping entry must be {{generation: string, proba: number}}, got {e!r:.80}")
            gen, proba = e.get("generation"), e.get("proba")
            if gen not in svc.state.generations:
                raise errors.NotFound(f"service {svc.id!r} has no generation {gen!r}")
            if not isinstance(proba, int | float) or isinstance(proba, bool) or not 0 <= proba <= 1:
                raise errors.BadRequest(f"proba of {gen} must be a number in [0, 1], got {proba!r}")
            clean.append({"generation": gen, "proba": float(proba)})
        if len({e["generation"] for e in clean}) != len(clean):
            raise errors.BadRequest("a generation appears twice in the mapping")
        total = math.fsum(e["proba"] for e in clean)
        if abs(total - 1.0) > 1e-6:
            raise errors.BadRequest(f"mapping probabilities must sum to 1, they sum to {total:g}")
        return {"mode": mode, "entries": clean}

    async def _switch(self, svc: Service, mapping: dict[str, Any], *, remember: bool = True) -> list[dict[str, Any]]:
        mapping = self._check_mapping(svc, mapping)
        tests: list[dict[str, Any]] = []
        fresh: list[Generation] = []
        # Warm ones serve again as they are (tested when loaded); taken out of `warm` first so
        # that their timer cannot retire them while the others load.
        reused = [svc.warm.pop(e["generation"]) for e in mapping["entries"] if e["generation"] in svc.warm]
        for kept in reused:
            self._cancel_warm_timer(svc.id, kept.version)
        try:
            for e in mapping["entries"]:
                if e["generation"] not in svc.loaded and all(g.version != e["generation"] for g in reused):
                    gen, t = await self._load_tested(svc.id, svc.state.generations[e["generation"]])
                    fresh.append(gen)
                    tests += t
        except BaseException:
            for gen in fresh:
                await self.registry.unload(gen, drain=False)
            for kept in reused:
                self._keep_warm(svc, kept)
            raise
        for gen in [*fresh, *reused]:
            self.registry.park(gen, False)
            svc.loaded[gen.version] = gen
        if remember and svc.state.mapping and svc.state.mapping != mapping:
            svc.state.history.append(svc.state.mapping)
        self.registry.apply_mapping(svc, mapping)
        self.storage.save_state(svc.id, svc.state)
        keep = {e["generation"] for e in mapping["entries"]}
        for version in list(svc.warm):  # this switch supersedes the one they were kept for
            self._cancel_warm_timer(svc.id, version)
            self._retire(svc.warm.pop(version))
        for version in [v for v in svc.loaded if v not in keep]:
            self._keep_warm(svc, svc.loaded.pop(version))
        log.info("%s now serves %s", svc.id, _describe(mapping))
        return tests

    def _keep_warm(self, svc: Service, gen: Generation) -> None:
        """Keeps a generation that just lost its traffic loaded for a rollback, until the
        next switch or `keep_warm` seconds."""
        if self.keep_warm <= 0:
            self._retire(gen)
            return
        svc.warm[gen.version] = gen
        self.registry.park(gen, True)

        def expire() -> None:
            self._warm_timers.pop((svc.id, gen.version), None)
            if svc.warm.get(gen.version) is gen:
                log.info("%s %s: kept warm %g s, retiring it", svc.id, gen.version, self.keep_warm)
                self._retire(svc.warm.pop(gen.version))

        loop = asyncio.get_running_loop()
        self._warm_timers[(svc.id, gen.version)] = loop.call_later(self.keep_warm, expire)

    def _cancel_warm_timer(self, service: str, version: str) -> None:
        timer = self._warm_timers.pop((service, version), None)
        if timer is not None:
            timer.cancel()

    def _retire(self, gen: Generation, *, remove: StoredGeneration | None = None) -> None:
        """Drains and stops a generation that no longer takes traffic, in the background."""

        async def retire() -> None:
            await self.registry.unload(gen, drain=True)
            if remove is not None:
                await asyncio.to_thread(self.storage.remove_generation_files, gen.service, remove, package=False)

        task = asyncio.create_task(retire(), name=f"retire {gen.service} {gen.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def wait_retired(self) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # ---- operations --------------------------------------------------------------------
    async def push(
        self, package: Path, *, activate: bool = False, mapping: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            manifest, stored, _ = await asyncio.to_thread(self.storage.unpack, package)
        except PackageError as exc:
            raise errors.BadRequest(f"package refused: {exc}") from None
        svc = self.registry.service(manifest.service, create=True)
        async with svc.lock:
            previous = svc.state.generations.get(stored.version)
            new = previous is None or previous.sha256 != stored.sha256
            tests: list[dict[str, Any]] = []
            if new:
                try:
                    to_serve = activate or bool(mapping) or stored.version in svc.loaded
                    gen, tests = await self._load_tested(svc.id, stored, to_serve=to_serve)
                except BaseException:
                    if previous is None or previous.dirname != stored.dirname:
                        self.storage.remove_generation_files(svc.id, stored, package=False)
                    if not svc.state.generations and svc.id in self.registry.services and not svc.loaded:
                        self.registry.services.pop(svc.id, None)
                    raise
                await asyncio.to_thread(self.storage.commit_package, package, svc.id, stored.version)
                svc.state.generations[stored.version] = stored
                stale = svc.warm.pop(stored.version, None)  # kept for a rollback to content now replaced
                if stale is not None:
                    self._cancel_warm_timer(svc.id, stored.version)
                    self._retire(stale, remove=previous)
                old = svc.loaded.get(stored.version)
                if old is not None:  # same version, new content, serving: swap it in
                    svc.loaded[stored.version] = gen
                    self._retire(old, remove=previous)
                elif activate or mapping:
                    svc.loaded[stored.version] = gen  # loaded and tested: the switch reuses it
                else:
                    await self.registry.unload(gen, drain=False)  # verified; serves when activated
                    if previous is not None and stale is None:  # else removed when `stale` stops
                        self.storage.remove_generation_files(svc.id, previous, package=False)
                self.storage.save_state(svc.id, svc.state)
            if activate:
                tests += await self._switch(
                    svc,
                    {"mode": "random", "entries": [{"generation": stored.version, "proba": 1.0}]},
                )
            elif mapping:
                tests += await self._switch(svc, mapping)
            return {
                "service": svc.id,
                "generation": stored.version,
                "new": new,
                "activated": stored.version in self.registry.serving(svc),
                "tests": tests,
                "state": self.service_state(svc.id),
            }

    async def seed(self, packages: list[Path]) -> list[dict[str, Any]]:
        """The packages named on `serve`'s command line: stored and activated (in order, so
        the last of a service serves) only for services the node had no state for (no
        mapping) when it started. What was pushed or published since wins on a restart with
        the same command line. Returns the push results of those activated."""
        decided = {sid for sid, svc in self.registry.services.items() if svc.state.mapping}
        results = []
        for package in packages:
            try:
                manifest = await asyncio.to_thread(read_manifest, package)
            except PackageError as exc:
                raise errors.BadRequest(f"package refused: {exc}") from None
            if manifest.service in decided:
                svc = self.registry.services[manifest.service]
                log.info(
                    "%s: keeping its state (serves %s); %s from the command line is not activated over it",
                    svc.id,
                    _describe(svc.state.mapping or {"mode": "random", "entries": []}),
                    package,
                )
                continue
            results.append(await self.push(package, activate=True))
        return results

    def create_service(self, service: str) -> dict[str, Any]:
        """A service with no generation yet (it serves nothing until one is pushed)."""
        svc = self.registry.service(service, create=True)
        self.storage.save_state(service, svc.state)
        return self.service_state(service)

    async def activate(self, service: str, generation: str) -> dict[str, Any]:
        return await self.set_mapping(
            service, {"mode": "random", "entries": [{"generation": generation, "proba": 1.0}]}
        )

    async def activate_newest(self, service: str) -> dict[str, Any]:
        """Activates the generation stored last."""
        svc = self.registry.service(service)
        if not svc.state.generations:
            raise errors.NotFound(f"service {service!r} has no generation")
        newest = sorted(svc.state.generations.values(), key=lambda g: g.stored_at)[-1]  # as service_state lists them
        return await self.activate(service, newest.version)

    def preload(self, service: str, generation: str) -> None:
        """Dataiku's preload: a stored generation loads when it is activated (tested first),
        and a generation switched away from stays warm (`keep_warm`), so there is nothing
        to do beyond checking that it exists."""
        if generation not in self.registry.service(service).state.generations:
            raise errors.NotFound(f"service {service!r} has no generation {generation!r}")

    async def set_mapping(self, service: str, mapping: dict[str, Any]) -> dict[str, Any]:
        svc = self.registry.service(service)
        async with svc.lock:
            await self._switch(svc, mapping)
            return self.service_state(service)

    async def rollback(self, service: str) -> dict[str, Any]:
        svc = self.registry.service(service)
        async with svc.lock:
            while svc.state.history:
                previous = svc.state.history.pop()
                if all(e["generation"] in svc.state.generations for e in previous.get("entries", [])):
                    await self._switch(svc, previous, remember=False)
                    return self.service_state(service)
            raise errors.Conflict(f"service {service!r} has no earlier mapping to roll back to")

    async def set_enabled(self, service: str, enabled: bool) -> dict[str, Any]:
        svc = self.registry.service(service)
        async with svc.lock:
            svc.state.enabled = enabled
            self.storage.save_state(service, svc.state)
            return self.service_state(service)

    async def delete_generation(self, service: str, generation: str) -> dict[str, Any]:
        svc = self.registry.service(service)
        async with svc.lock:
            stored = svc.state.generations.get(generation)
            if stored is None:
                raise errors.NotFound(f"service {service!r} has no generation {generation!r}")
            if generation in self.registry.serving(svc):
                raise errors.Conflict(f"generation {generation} of {service} serves traffic: switch away from it first")
            gen = svc.loaded.pop(generation, None) or svc.warm.pop(generation, None)
            self._cancel_warm_timer(service, generation)
            if gen is not None:
                await self.registry.unload(gen, drain=True)
            del svc.state.generations[generation]
            svc.state.history = [
                m for m in svc.state.history if all(e["generation"] != generation for e in m["entries"])
            ]
            self.storage.save_state(service, svc.state)
            await asyncio.to_thread(self.storage.remove_generation_files, service, stored, package=True)
            return self.service_state(service)

    async def delete_service(self, service: str) -> None:
        svc = self.registry.service(service)
        async with svc.lock:
            svc.state.enabled = False
            self.registry.services.pop(service, None)
            self.registry.keys.drop_service(service)
            for version in svc.warm:
                self._cancel_warm_timer(service, version)
            gens = [*svc.loaded.values(), *svc.warm.values()]
            await asyncio.gather(*(self.registry.unload(g, drain=True) for g in gens))
            await asyncio.to_thread(self.storage.remove_service, service)

    def get_tuning(self, service: str, endpoint: str) -> dict[str, Any]:
        svc = self.registry.service(service)
        spec = self._endpoint_spec(svc, endpoint)
        settings = pool_settings.resolve(self.storage.root, service, endpoint, spec.pool)
        return {
            "pool": settings.to_json(),
            "source": str(pool_settings.config_path(self.storage.root, service, endpoint)),
        }

    async def set_tuning(self, service: str, endpoint: str, values: dict[str, Any]) -> dict[str, Any]:
        svc = self.registry.service(service)
        spec = self._endpoint_spec(svc, endpoint)
        if spec.type == "lookup":
            raise errors.BadRequest(f"{service}/{endpoint} is a lookup endpoint: the node answers it without workers")
        path = pool_settings.config_path(self.storage.root, service, endpoint)
        merged = {**pool_settings.read_override(self.storage.root, service, endpoint), **values}
        pool_settings.validate({**spec.pool, **merged}, f"tuning of {service}/{endpoint}")
        write_atomic(path, orjson.dumps({"pool": merged}, option=orjson.OPT_INDENT_2))
        settings = pool_settings.resolve(self.storage.root, service, endpoint, spec.pool)
        for gen in [*svc.loaded.values(), *svc.warm.values()]:
            ep = gen.endpoints.get(endpoint)
            if ep is not None and ep.pool is not None:
                ep.pool.apply(settings)
        return self.get_tuning(service, endpoint)

    def _endpoint_spec(self, svc: Service, endpoint: str) -> Any:
        for gen in [*svc.loaded.values(), *svc.warm.values()]:
            if endpoint in gen.endpoints:
                return gen.endpoints[endpoint].spec
        for stored in svc.state.generations.values():
            manifest = self.storage.manifest_of(svc.id, stored)
            if endpoint in manifest.endpoints:
                return manifest.endpoints[endpoint]
        raise errors.NotFound(f"service {svc.id!r} has no endpoint {endpoint!r}")

    # ---- views -------------------------------------------------------------------------
    def service_state(self, service: str) -> dict[str, Any]:
        svc = self.registry.service(service)
        shares = {e["generation"]: e["proba"] for e in (svc.state.mapping or {}).get("entries", [])}
        gens = []
        for version, stored in sorted(svc.state.generations.items(), key=lambda kv: kv[1].stored_at):
            loaded = svc.loaded.get(version)
            gens.append(
                {
                    "generation": version,
                    "loaded": loaded is not None,
                    "active": shares.get(version, 0) > 0,
                    "share": shares.get(version, 0.0),
                    "sha256": stored.sha256,
                    "stored_at": stored.stored_at,
                    "endpoints": sorted(loaded.endpoints) if loaded else [],
                }
            )
        return {
            "service": service,
            "enabled": svc.state.enabled,
            "mapping": svc.state.mapping,
            "generations": gens,
        }

    def list_services(self) -> list[dict[str, Any]]:
        return [self.service_state(s) for s in sorted(self.registry.services)]


def _describe(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{e['generation']}={e['proba']:g}" for e in mapping["entries"]) + f" ({mapping['mode']})"
