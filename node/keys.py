"""Key management over the admin API: admin keys and service API keys, applied at once.

Both kinds live in files of the data dir, so they survive restarts and a repository's
desired state can carry them (the files are the state):

- admin keys added over the API: `DATA_DIR/admin-keys.json` (`{"keys": [{"id", "sha256",
  "label", "description", "createdBy", "createdOn"}]}`), next to the keys of `--admin-key`,
  `$APINODE_ADMIN_KEY` and `DATA_DIR/admin-keys.txt` (which :class:`~node.auth.AdminAuth`
  reads). A key of admin-keys.txt can be deleted (its line is removed); one given on the
  command line or in the environment cannot (restart without it).
- service keys: `DATA_DIR/config/services/<S>/api_keys.json`, the file
  :class:`~node.auth.ApiKeys` already reads (it overrides the package's keys). The first
  change copies the package's keys into it, so they stay valid.

Keys are stored as sha256 digests only, and answered once, by the call that creates them.
The last key of either kind cannot be removed: no admin key locks the admin plane out, and
a service without keys is public.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import orjson

from node import errors
from node.auth import KEYS_FILE, AdminAuth, ApiKeys, read_admin_json
from node.auth import MANAGED_FILE as ADMIN_KEYS_JSON

audit = logging.getLogger("node.auth")
_META = ("label", "description", "createdBy")
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # ids go into log lines: no newline or control character


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_json(path: Path, doc: Any) -> None:
    """Writes `doc` to `path` atomically (a reader sees the old file or the new one), 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 1000:
        raise errors.BadRequest(f"{name!r} must be a string (at most 1000 characters)")
    return value


class KeyManager:
    def __init__(self, auth: AdminAuth, api_keys: ApiKeys, data_dir: Path, services: Any = None) -> None:
        self.auth = auth
        self.api_keys = api_keys
        self.data_dir = data_dir
        self.services = services  # a mapping whose keys are the services deployed (the registry's)

    # ---- admin keys ----------------------------------------------------------------------
    def list_admin(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "sha256"} for e in self.auth.entries()]

    def add_admin(self, body: dict[str, Any], by: str | None, peer: str | None) -> dict[str, Any]:
        if body.get("expiry") not in (None, "", 0):
            raise errors.NotSupported("admin keys with an expiry are not supported: delete the key instead")
        entry = {m: _text(body, m) for m in _META}
        key = secrets.token_hex(32)
        entry = {"id": secrets.token_hex(6), **entry, "createdOn": _now(), "sha256": _sha(key)}
        write_json(self.data_dir / ADMIN_KEYS_JSON, {"keys": [*read_admin_json(self.data_dir), entry]})
        self.auth.reload()
        audit.warning("admin key %s added by %s from %s", entry["id"], by or "?", peer or "?")
        shown = {k: v for k, v in entry.items() if k != "sha256"}
        return {**shown, "key": key, "source": "admin-api"}

    def delete_admin(self, key_id: str | None, key: str | None, by: str | None, peer: str | None) -> None:
        entries = self.auth.entries()
        digest = _sha(key) if key else None
        target = next((e for e in entries if e["id"] == key_id or (digest and e["sha256"] == digest)), None)
        if target is None:
            raise errors.NotFound(f"no admin key {key_id!r}" if key_id else "no such admin key")
        if len(entries) == 1:
            raise errors.Conflict("this is the node's last admin key: add another one first")
        source = target["source"]
        if source == "admin-api":
            kept = [e for e in read_admin_json(self.data_dir) if e["sha256"] != target["sha256"]]
            write_json(self.data_dir / ADMIN_KEYS_JSON, {"keys": kept})
        elif source == KEYS_FILE:
            path = self.data_dir / KEYS_FILE
            lines = path.read_text().splitlines()
            kept_lines = [ln for ln in lines if ln.startswith("#") or _sha(ln.strip()) != target["sha256"]]
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, ("\n".join(kept_lines) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        else:
            raise errors.Conflict(f"admin key {target['id']} was given by {source}: restart the node without it")
        self.auth.reload()
        audit.warning("admin key %s deleted by %s from %s", target["id"], by or "?", peer or "?")

    # ---- service keys --------------------------------------------------------------------
    def _service(self, service: str) -> None:
        if self.services is not None and service not in self.services:
            raise errors.NotFound(f"service {service!r} is not deployed on this node")

    def _service_entries(self, service: str) -> tuple[list[dict[str, Any]], str]:
        """The keys in force (hashed) and where they come from: the override file or the package."""
        override = self.api_keys.override(service)
        if override is not None:
            source = "admin-api"
            entries = override
        else:
            source = "package"
            entries = self.api_keys.manifest_keys(service)
        out = []
        for i, k in enumerate(entries):
            sha = k.get("sha256") or (_sha(k["key"]) if isinstance(k.get("key"), str) else "")
            if sha:
                out.append(
                    {**{m: v for m, v in k.items() if m != "key"}, "id": str(k.get("id") or f"key-{i}"), "sha256": sha}
                )
        return out, source

    def list_service(self, service: str) -> list[dict[str, Any]]:
        self._service(service)
        entries, source = self._service_entries(service)
        return [
            {"service": service, "source": source, **{k: v for k, v in e.items() if k != "sha256"}} for e in entries
        ]

    def add_service(self, service: str, body: dict[str, Any], by: str | None, peer: str | None) -> dict[str, Any]:
        self._service(service)
        entries, _ = self._service_entries(service)
        key_id = _text(body, "id") or secrets.token_hex(6)
        if not _ID_RE.fullmatch(key_id):
            raise errors.BadRequest(f"a key id is 1-64 letters, digits, '_', '.', '-': got {key_id!r}")
        if any(e["id"] == key_id for e in entries):
            raise errors.Conflict(f"service {service!r} already has a key {key_id!r}")
        key = secrets.token_hex(32)
        entry = {"id": key_id, **{m: _text(body, m) for m in _META}, "createdOn": _now(), "sha256": _sha(key)}
        self._write_service(service, [*entries, entry])
        audit.warning("API key %s of service %s added by %s from %s", key_id, service, by or "?", peer or "?")
        shown = {k: v for k, v in entry.items() if k != "sha256"}
        return {"service": service, **shown, "key": key, "source": "admin-api"}

    def revoke_service(self, service: str, key_id: str, by: str | None, peer: str | None) -> None:
        self._service(service)
        entries, _ = self._service_entries(service)
        kept = [e for e in entries if e["id"] != key_id]
        if len(kept) == len(entries):
            raise errors.NotFound(f"service {service!r} has no key {key_id!r}")
        if not kept:
            raise errors.Conflict(
                f"{key_id!r} is the last key of service {service!r}: a service without keys is public; add another first"
            )
        self._write_service(service, kept)
        audit.warning("API key %s of service %s revoked by %s from %s", key_id, service, by or "?", peer or "?")

    def _write_service(self, service: str, entries: list[dict[str, Any]]) -> None:
        write_json(self.api_keys.path(service), {"api_keys": entries})
        self.api_keys.reload(service)  # at once: not at the next stat check
