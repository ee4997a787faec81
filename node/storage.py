"""The data dir: packages, unpacked generations and service state, written atomically.

    packages/<service>/<version>.apz          the package as pushed
    generations/<service>/<version>-<sha12>/  verified and unpacked, what workers read;
                                              the sha in the name lets a re-push of the same
                                              version load beside the serving one and swap
    services/<service>/state.json             mapping, history, enabled, stored generations
    config/services/<service>/<endpoint>.json pool settings overriding the package's
    tmp/                                      uploads in progress (emptied on start)

Every write is a temp file then a rename, so a crash (even mid-upload) leaves the old state
or the new one, never half of either; on start, anything no state refers to is removed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from apz.archive import extract_package, load_extracted, read_manifest
from apz.specs import Manifest
from apz.vocab import sha256_file

log = logging.getLogger("node.registry")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(slots=True)
class StoredGeneration:
    version: str
    sha256: str
    stored_at: str

    @property
    def dirname(self) -> str:
        return f"{self.version}-{self.sha256[:12]}"


@dataclass(slots=True)
class ServiceState:
    mapping: dict[str, Any] | None = None  # {"mode": "random"|"hash", "entries": [{"generation", "proba"}]}
    history: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True
    generations: dict[str, StoredGeneration] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "history": self.history[-20:],
            "enabled": self.enabled,
            "generations": {v: {"sha256": g.sha256, "stored_at": g.stored_at} for v, g in self.generations.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServiceState:
        gens = {
            v: StoredGeneration(v, g["sha256"], g.get("stored_at", "")) for v, g in d.get("generations", {}).items()
        }
        return cls(d.get("mapping"), list(d.get("history", [])), bool(d.get("enabled", True)), gens)


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        for sub in ("packages", "generations", "services", "config/services", "tmp"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def state_path(self, service: str) -> Path:
        return self.root / "services" / service / "state.json"

    def package_path(self, service: str, version: str) -> Path:
        return self.root / "packages" / service / f"{version}.apz"

    def generation_dir(self, service: str, gen: StoredGeneration) -> Path:
        return self.root / "generations" / service / gen.dirname

    def load_states(self) -> dict[str, ServiceState]:
        states = {}
        for path in sorted((self.root / "services").glob("*/state.json")):
            states[path.parent.name] = ServiceState.from_json(orjson.loads(path.read_bytes()))
        return states

    def save_state(self, service: str, state: ServiceState) -> None:
        write_atomic(self.state_path(service), orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2))

    def unpack(self, package: Path) -> tuple[Manifest, StoredGeneration, Path]:
        """Verifies and unpacks a package beside what serves; nothing is committed yet."""
        manifest = read_manifest(package)
        sha = sha256_file(package)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        gen = StoredGeneration(manifest.version, sha, now)
        target = self.generation_dir(manifest.service, gen)
        if not (target / "manifest.json").exists():
            extract_package(package, target)
        return manifest, gen, target

    def commit_package(self, package: Path, service: str, version: str) -> None:
        target = self.package_path(service, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".apz-", dir=target.parent)
        os.close(fd)
        shutil.copyfile(package, tmp)
        os.replace(tmp, target)

    def manifest_of(self, service: str, gen: StoredGeneration) -> Manifest:
        return load_extracted(self.generation_dir(service, gen))

    def remove_generation_files(self, service: str, gen: StoredGeneration, *, package: bool) -> None:
        shutil.rmtree(self.generation_dir(service, gen), ignore_errors=True)
        if package:
            self.package_path(service, gen.version).unlink(missing_ok=True)

    def remove_service(self, service: str) -> None:
        for sub in ("packages", "generations", "services", "config/services"):
            shutil.rmtree(self.root / sub / service, ignore_errors=True)

    def clean(self, states: dict[str, ServiceState]) -> None:
        """Removes uploads cut short and unpacked dirs no state refers to (a crash's leftovers)."""
        for p in self.tmp.iterdir():
            p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)
        for service_dir in (self.root / "generations").iterdir():
            state = states.get(service_dir.name)
            keep = {g.dirname for g in state.generations.values()} if state else set()
            for d in service_dir.iterdir():
                if d.name not in keep:
                    log.info("removing unreferenced %s", d)
                    shutil.rmtree(d, ignore_errors=True)
