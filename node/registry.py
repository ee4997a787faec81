"""Services and their generations: what is stored in the data dir and what is loaded.

Data dir layout:

    packages/<service>/<version>.apz        every package pushed, as received (immutable)
    generations/<service>/<version>/        the same, verified and unpacked (what workers read)
    services/<service>/state.json           which generation serves (the mapping), enabled
    config/services/<service>/<endpoint>.json   pool settings that override the package's

Everything is written atomically (a temp file then a rename), so a crash leaves either
the old state or the new one. On start the node loads every service's mapped generations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from node import errors
from node.features import FeatureCodec
from node.package import (
    EndpointSpec,
    Manifest,
    PackageError,
    extract_package,
    load_extracted,
    read_manifest,
    sha256_file,
)
from node.supervisor import settings as pool_settings
from node.supervisor.pool import Pool
from node.supervisor.supervisor import Supervisor
from node.worker import protocol as wp

log = logging.getLogger("node.registry")

_OPS = {"prediction": (wp.OP_PREDICT, True), "function": (wp.OP_CALL, False)}


@dataclass(slots=True)
class Endpoint:
    spec: EndpointSpec
    pool: Pool
    codec: FeatureCodec | None


@dataclass(slots=True)
class Generation:
    service: str
    version: str
    manifest: Manifest
    path: Path
    endpoints: dict[str, Endpoint] = field(default_factory=dict)


@dataclass(slots=True)
class Service:
    id: str
    generations: dict[str, Generation] = field(default_factory=dict)  # loaded ones
    active: str | None = None
    history: list[str] = field(default_factory=list)  # previously active, newest last
    enabled: bool = True


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Registry:
    def __init__(self, data_dir: Path, supervisor: Supervisor, *, onnx_threads: int = 1) -> None:
        self.data_dir = data_dir
        self.sup = supervisor
        self.onnx_threads = onnx_threads
        self.services: dict[str, Service] = {}
        self._lock = asyncio.Lock()
        self._loads = 0
        for sub in ("packages", "generations", "services", "config/services"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)

    # ---- storage -----------------------------------------------------------------------
    def _package_path(self, service: str, version: str) -> Path:
        return self.data_dir / "packages" / service / f"{version}.apz"

    def _generation_path(self, service: str, version: str) -> Path:
        return self.data_dir / "generations" / service / version

    def _state_path(self, service: str) -> Path:
        return self.data_dir / "services" / service / "state.json"

    def _save_state(self, svc: Service) -> None:
        state = {"active": svc.active, "history": svc.history[-20:], "enabled": svc.enabled}
        _write_atomic(self._state_path(svc.id), orjson.dumps(state, option=orjson.OPT_INDENT_2))

    def store(self, package: Path) -> tuple[Manifest, bool]:
        """Verifies and stores a package. Returns its manifest and whether it is new content."""
        manifest = read_manifest(package)
        target = self._package_path(manifest.service, manifest.version)
        if target.exists() and sha256_file(target) == sha256_file(package):
            if (
                self._generation_path(manifest.service, manifest.version) / "manifest.json"
            ).exists():
                return manifest, False
        gen_dir = self._generation_path(manifest.service, manifest.version)
        staging = gen_dir.with_name(f".{gen_dir.name}.staging")
        extract_package(package, staging)  # verifies every file before anything is replaced
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".apz-", dir=target.parent)
        os.close(fd)
        shutil.copyfile(package, tmp)
        os.replace(tmp, target)
        if gen_dir.exists():
            shutil.rmtree(gen_dir)
        os.replace(staging, gen_dir)
        return manifest, True

    # ---- loading -----------------------------------------------------------------------
    async def _load(self, service: str, version: str) -> Generation:
        path = self._generation_path(service, version)
        try:
            manifest = load_extracted(path)
        except (OSError, PackageError, ValueError) as exc:
            raise errors.BadRequest(f"cannot load {service} {version}: {exc}") from exc
        self._loads += 1
        gen = Generation(service, version, manifest, path)
        spec_base = {"package_dir": str(path), "onnx_threads": self.onnx_threads}

        async def load_endpoint(ep: EndpointSpec) -> tuple[str, Endpoint]:
            settings = pool_settings.resolve(self.data_dir, service, ep.id, ep.pool)
            op, batchable = _OPS[ep.type]
            key = f"{service}/{ep.id}@{version}"
            if key in self.sup.pools:  # the same version reloaded with new content
                key += f"~{self._loads}"
            pool = await self.sup.add_pool(
                key, {**spec_base, "endpoint": ep.raw}, settings, op=op, batchable=batchable
            )
            codec = FeatureCodec(ep) if ep.type == "prediction" else None
            return ep.id, Endpoint(ep, pool, codec)

        results = await asyncio.gather(
            *(load_endpoint(e) for e in manifest.endpoints.values()), return_exceptions=True
        )
        for r in results:
            if isinstance(r, tuple):
                gen.endpoints[r[0]] = r[1]
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self._unload(gen, drain=False)
            if isinstance(failure, errors.ApiNodeError):
                raise errors.BadRequest(
                    f"{service} {version} failed to load: {failure.message}"
                ) from failure
            raise failure
        log.info("loaded %s %s (%d endpoints)", service, version, len(gen.endpoints))
        return gen

    async def _unload(self, gen: Generation, *, drain: bool) -> None:
        await asyncio.gather(
            *(self.sup.remove_pool(e.pool, drain=drain) for e in gen.endpoints.values())
        )

    async def install(self, package: Path) -> Generation:
        """Stores a package, loads it, and makes it the active generation of its service."""
        async with self._lock:
            manifest, new = await asyncio.to_thread(self.store, package)
            svc = self.services.setdefault(manifest.service, Service(manifest.service))
            current = svc.generations.get(manifest.version)
            if current is not None and not new:
                gen = current
            else:
                gen = await self._load(manifest.service, manifest.version)
            old = svc.generations.get(svc.active) if svc.active else None
            svc.generations[gen.version] = gen
            if svc.active and svc.active != gen.version:
                svc.history.append(svc.active)
            svc.active = gen.version
            self._save_state(svc)
            if current is not None and current is not gen:
                await self._unload(current, drain=True)
            elif old is not None and old is not gen:
                svc.generations.pop(old.version, None)
                await self._unload(old, drain=True)
            return gen

    async def load_all(self) -> None:
        """Loads what the data dir says should serve (on node start)."""
        root = self.data_dir / "services"
        for state_file in sorted(root.glob("*/state.json")):
            service = state_file.parent.name
            state = orjson.loads(state_file.read_bytes())
            svc = Service(service, active=state.get("active"), history=state.get("history", []))
            svc.enabled = state.get("enabled", True)
            self.services[service] = svc
            if svc.active:
                try:
                    svc.generations[svc.active] = await self._load(service, svc.active)
                except errors.ApiNodeError as exc:
                    log.error("%s", exc.message)

    async def close(self) -> None:
        for svc in self.services.values():
            for gen in svc.generations.values():
                await self._unload(gen, drain=False)

    # ---- dispatch ----------------------------------------------------------------------
    def resolve(
        self, service: str, endpoint: str, dispatch: Any = None
    ) -> tuple[Generation, Endpoint]:
        svc = self.services.get(service)
        if svc is None or not svc.generations:
            raise errors.NotFound(f"service {service!r} is not deployed on this node")
        if not svc.enabled:
            raise errors.NotFound(f"service {service!r} is disabled")
        version = svc.active
        if dispatch:
            if not isinstance(dispatch, dict):
                raise errors.BadRequest("'dispatch' must be an object")
            forced = dispatch.get("forcedGeneration")
            if forced:
                if forced not in svc.generations:
                    raise errors.NotFound(
                        f"generation {forced!r} of service {service!r} is not loaded"
                    )
                version = forced
        gen = svc.generations.get(version) if version else None
        if gen is None:
            raise errors.NotFound(f"service {service!r} has no active generation")
        ep = gen.endpoints.get(endpoint)
        if ep is None:
            known = ", ".join(sorted(gen.endpoints))
            raise errors.NotFound(
                f"service {service!r} has no endpoint {endpoint!r} (it has: {known})"
            )
        return gen, ep

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for svc in self.services.values():
            out[svc.id] = {
                "active": svc.active,
                "enabled": svc.enabled,
                "generations": {
                    v: {
                        ep_id: {"type": ep.spec.type, **ep.pool.status()}
                        for ep_id, ep in g.endpoints.items()
                    }
                    for v, g in svc.generations.items()
                },
            }
        return out

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        for svc in self.services.values():
            gen = svc.generations.get(svc.active) if svc.active else None
            if gen is None:
                continue
            for ep_id, ep in gen.endpoints.items():
                if not ep.pool.ready:
                    reasons.append(f"{svc.id}/{ep_id}@{gen.version}: {ep.pool.not_ready_reason}")
        return not reasons, reasons
