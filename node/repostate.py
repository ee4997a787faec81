"""The desired-state file of a package repository: `state.json` at the repository's root.

The deployer writes it (`apinode deploy publish ... --repository`), nodes read it
(`apinode serve --repository`); this module is the one definition both share:

    {
      "format": 1,
      "serial": 7,                      +1 on every write: nodes report the serial they reached
      "updated_at": "2026-12-02T06:00:00+00:00",
      "services": {
        "fraud": {
          "generations": {"v2": {"file": "packages/fraud/v2-0123456789ab.apz", "sha256": "<64 hex>"}},
          "mapping": {"mode": "random", "entries": [{"generation": "v2", "proba": 1.0}]},
          "history": [<earlier mappings, newest last, for rollback>],
          "enabled": true,
          "tuning": {"score": {"floor": 2, "ceil": 4}},
          "api_keys": [{"id": "team-a", "sha256": "<64 hex>", "label": "", "description": "",
                        "createdBy": "", "createdOn": "2026-12-02T06:00:00Z"}]
        }
      }
    }

`file` is relative to the repository's root. A mapping is null until a generation is
activated; nodes fetch the generations the mapping names. `api_keys` is absent or null
while the repository does not manage the service's keys (each node keeps its own: the
package's, or those added over its admin API); a list (never empty: a service without keys
is public) is the service's keys on every node, digests only.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from apz.vocab import ID_RE
from node.supervisor import settings as pool_settings

FORMAT = 1
STATE_FILE = "state.json"
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_FILE_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_HISTORY = 20
KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # as node.keys: ids go into log lines
_KEY_TEXT = ("label", "description", "createdBy", "createdOn")


class StateError(ValueError):
    """A state file that does not follow the format."""


@dataclass(slots=True)
class RepoGeneration:
    file: str
    sha256: str


@dataclass(slots=True)
class RepoService:
    generations: dict[str, RepoGeneration] = field(default_factory=dict)
    mapping: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True
    tuning: dict[str, dict[str, int]] = field(default_factory=dict)
    api_keys: list[dict[str, str]] | None = None  # None: the repository leaves keys to each node

    def serving(self) -> list[str]:
        return [e["generation"] for e in (self.mapping or {}).get("entries", [])]

    def set_mapping(self, mapping: dict[str, Any]) -> None:
        """Switches to `mapping` (checked), remembering the previous one for rollback."""
        mapping = check_mapping(mapping, set(self.generations))
        if self.mapping is not None and self.mapping != mapping:
            self.history = [*self.history, self.mapping][-_HISTORY:]
        self.mapping = mapping


@dataclass(slots=True)
class RepoState:
    serial: int = 0
    updated_at: str = ""
    services: dict[str, RepoService] = field(default_factory=dict)

    def dumps(self) -> bytes:
        doc = {
            "format": FORMAT,
            "serial": self.serial,
            "updated_at": self.updated_at,
            "services": {
                sid: {
                    "generations": {v: {"file": g.file, "sha256": g.sha256} for v, g in s.generations.items()},
                    "mapping": s.mapping,
                    "history": s.history,
                    "enabled": s.enabled,
                    "tuning": s.tuning,
                    "api_keys": s.api_keys,
                }
                for sid, s in sorted(self.services.items())
            },
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"

    def bump(self) -> None:
        """Marks a new version of the state (call before writing it)."""
        self.serial += 1
        self.updated_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def check_mapping(mapping: Any, stored: set[str]) -> dict[str, Any]:
    """A clean mapping, or StateError saying what is wrong with it."""
    if not isinstance(mapping, dict):
        raise StateError(f"a mapping must be an object, got {mapping!r:.60}")
    mode = mapping.get("mode") or "random"
    if mode not in ("random", "hash"):
        raise StateError(f"mapping mode must be 'random' or 'hash', got {mode!r}")
    entries = mapping.get("entries")
    if not isinstance(entries, list) or not entries:
        raise StateError("a mapping needs at least one entry {generation, proba}")
    clean: list[dict[str, Any]] = []
    for e in entries:
        gen = e.get("generation") if isinstance(e, dict) else None
        proba = e.get("proba") if isinstance(e, dict) else None
        if not isinstance(gen, str) or gen not in stored:
            raise StateError(f"the mapping names generation {gen!r}, which the repository does not store")
        if not isinstance(proba, int | float) or isinstance(proba, bool) or not 0 <= proba <= 1:
            raise StateError(f"proba of {gen} must be a number in [0, 1], got {proba!r}")
        clean.append({"generation": gen, "proba": float(proba)})
    if len({e["generation"] for e in clean}) != len(clean):
        raise StateError("a generation appears twice in the mapping")
    total = math.fsum(e["proba"] for e in clean)
    if abs(total - 1.0) > 1e-6:
        raise StateError(f"mapping probabilities must sum to 1, they sum to {total:g}")
    return {"mode": mode, "entries": clean}


def loads(data: bytes) -> RepoState:
    """Parses and checks a state file (StateError when it is not one)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateError("the state must be a JSON object")
    if doc.get("format") != FORMAT:
        raise StateError(f"unknown state format {doc.get('format')!r} (this apinode reads format {FORMAT})")
    serial = doc.get("serial", 0)
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise StateError(f"serial must be a non-negative integer, got {serial!r}")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        raise StateError("services must be an object")
    state = RepoState(serial, str(doc.get("updated_at", "")))
    for sid, raw in services.items():
        if not ID_RE.fullmatch(sid):
            raise StateError(f"bad service id {sid!r}")
        state.services[sid] = _service(sid, raw)
    return state


def _service(sid: str, raw: Any) -> RepoService:
    if not isinstance(raw, dict):
        raise StateError(f"service {sid}: must be an object")
    svc = RepoService(enabled=raw.get("enabled", True))
    if not isinstance(svc.enabled, bool):
        raise StateError(f"service {sid}: enabled must be true or false")
    for version, g in (raw.get("generations") or {}).items():
        if not ID_RE.fullmatch(version) or not isinstance(g, dict):
            raise StateError(f"service {sid}: bad generation {version!r}")
        file, sha = g.get("file"), g.get("sha256")
        if not isinstance(file, str) or not _FILE_RE.fullmatch(file) or ".." in file.split("/"):
            raise StateError(
                f"service {sid} {version}: file must be a relative path inside the repository, got {file!r}"
            )
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise StateError(f"service {sid} {version}: sha256 must be 64 lowercase hex digits")
        svc.generations[version] = RepoGeneration(file, sha)
    try:
        if raw.get("mapping") is not None:
            svc.mapping = check_mapping(raw["mapping"], set(svc.generations))
        svc.history = [m for m in raw.get("history") or [] if isinstance(m, dict)]
    except StateError as exc:
        raise StateError(f"service {sid}: {exc}") from None
    tuning = raw.get("tuning") or {}
    if not isinstance(tuning, dict) or not all(
        isinstance(ep, str) and isinstance(v, dict) and all(isinstance(x, int) for x in v.values())
        for ep, v in tuning.items()
    ):
        raise StateError(f"service {sid}: tuning must map endpoints to {{setting: integer}}")
    for ep, values in tuning.items():  # refused here, once, rather than by every node at every sync
        if not ID_RE.fullmatch(ep):
            raise StateError(f"service {sid}: tuning names {ep!r}, which is not an endpoint id")
        try:
            pool_settings.validate(values, f"service {sid}: tuning of {ep}")
        except pool_settings.PoolConfigError as exc:
            raise StateError(exc.message) from None
    svc.tuning = tuning
    if raw.get("api_keys") is not None:
        svc.api_keys = _api_keys(sid, raw["api_keys"])
    return svc


def _api_keys(sid: str, keys: Any) -> list[dict[str, str]]:
    if not isinstance(keys, list) or not keys:
        raise StateError(f"service {sid}: api_keys must be null or a non-empty list (a service without keys is public)")
    clean: list[dict[str, str]] = []
    for k in keys:
        kid = k.get("id") if isinstance(k, dict) else None
        if not isinstance(kid, str) or not KEY_ID_RE.fullmatch(kid):
            raise StateError(f"service {sid}: a key id is 1-64 letters, digits, '_', '.', '-': got {kid!r:.70}")
        sha = k.get("sha256")
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise StateError(f"service {sid}: key {kid}: sha256 must be 64 lowercase hex digits")
        if "key" in k:
            raise StateError(f"service {sid}: key {kid}: the state holds digests only, never a key")
        text = {m: k.get(m) or "" for m in _KEY_TEXT}
        if not all(isinstance(v, str) for v in text.values()):
            raise StateError(f"service {sid}: key {kid}: {', '.join(_KEY_TEXT)} must be strings")
        clean.append({"id": kid, "sha256": sha, **text})
    if len({k["id"] for k in clean}) != len(clean):
        raise StateError(f"service {sid}: a key id appears twice in api_keys")
    return clean
