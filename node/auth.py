"""Admin keys: who may deploy.

Keys come from `--admin-key` and from `DATA_DIR/admin-keys.txt` (one per line). They are
kept only as sha256 digests and compared in constant time. A node with no admin key
answers admin calls from loopback addresses only, so an unconfigured node listening on a
public address cannot be deployed to by strangers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from node import errors

audit = logging.getLogger("node.auth")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_from_header(header: str | None) -> str | None:
    """The key of `Authorization: Bearer KEY` or `Basic base64(KEY:)`."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user, _, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user or None
    return None


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    host = address
    if host.startswith(("ipv4:", "ipv6:")):  # gRPC peer: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"
        host = host.split(":", 1)[1]
        host = host[1 : host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    elif host.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminAuth:
    def __init__(self, keys: Iterable[str], data_dir: Path | None = None) -> None:
        all_keys = [k for k in keys if k]
        if data_dir is not None:
            path = data_dir / "admin-keys.txt"
            if path.exists():
                all_keys += [
                    line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
                ]
        self._digests = [_digest(k) for k in all_keys]

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def check(self, header: str | None, peer: str | None) -> None:
        """Raises Unauthorized unless the caller may use the admin API."""
        if not self._digests:
            if is_loopback(peer):
                return
            audit.warning("admin call refused from %s: no admin key configured, loopback only", peer)
            raise errors.Forbidden("this node has no admin key: its admin API answers loopback callers only")
        key = key_from_header(header)
        if key is None:
            audit.warning("admin call without a key from %s", peer)
            raise errors.Unauthorized("the admin API needs an admin key (Authorization: Bearer KEY)")
        d = _digest(key)
        if not any(hmac.compare_digest(d, ok) for ok in self._digests):
            audit.warning("admin call with a wrong key from %s", peer)
            raise errors.Unauthorized("wrong admin key")


class ApiKeys:
    """Service API keys: `api_keys` in the package's manifest (`[{"id", "sha256"}]`), or
    `DATA_DIR/config/services/<SERVICE>/api_keys.json` (`{"api_keys": [{"id", "key" or
    "sha256"}]}`), which overrides the package's. A service without keys is public.

    The override file is re-read when it changes, without a restart: a check looks at the
    file's stat (inode, size, mtime) at most every :attr:`recheck_s` seconds, so a rotated
    key takes effect within that delay. A file that cannot be read keeps the keys in force
    (and is logged): a half-written file must not open a service to everyone."""

    recheck_s = 0.5

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._by_service: dict[str, dict[bytes, str]] = {}  # service -> digest -> key id
        self._manifest: dict[str, list[dict[str, str]]] = {}  # service -> the package's keys
        self._seen: dict[str, tuple[float, tuple[int, int, int] | None]] = {}  # service -> (checked at, file stat)

    def _path(self, service: str) -> Path:
        return self.data_dir / "config" / "services" / service / "api_keys.json"

    def _override(self, service: str) -> list[dict[str, str]] | None:
        path = self._path(service)
        if not path.exists():
            return None
        import orjson

        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise errors.BadRequest(f"{path}: not valid JSON: {exc}") from None
        keys = doc.get("api_keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise errors.BadRequest(f'{path}: expected {{"api_keys": [{{"id", "key"}}, ...]}}')
        return keys

    def _stat(self, service: str) -> tuple[int, int, int] | None:
        try:
            st = self._path(service).stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def set_service(self, service: str, manifest_keys: list[dict[str, str]] | None) -> None:
        self._manifest[service] = manifest_keys or []
        stat = self._stat(service)
        self._by_service[service] = self._table(service)
        self._seen[service] = (time.monotonic(), stat)

    def _table(self, service: str) -> dict[bytes, str]:
        keys = self._override(service)
        if keys is None:
            keys = self._manifest.get(service, [])
        table: dict[bytes, str] = {}
        for i, k in enumerate(keys):
            kid = str(k.get("id") or f"key-{i}")
            if k.get("sha256"):
                table[bytes.fromhex(k["sha256"])] = kid
            elif k.get("key"):
                table[_digest(k["key"])] = kid
        return table

    def _reload_if_changed(self, service: str) -> None:
        seen = self._seen.get(service)
        if seen is None:  # not a service the registry set up
            return
        now = time.monotonic()
        if now - seen[0] < self.recheck_s:
            return
        stat = self._stat(service)
        if stat == seen[1]:
            self._seen[service] = (now, stat)
            return
        try:
            table = self._table(service)
        except (errors.BadRequest, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, errors.BadRequest) else str(exc)
            audit.error("API keys of service %s not reloaded, the previous ones stay in force: %s", service, message)
            self._seen[service] = (now, stat)
            return
        self._by_service[service] = table
        self._seen[service] = (now, stat)
        audit.warning("API keys of service %s reloaded from %s (%d keys)", service, self._path(service), len(table))

    def drop_service(self, service: str) -> None:
        self._by_service.pop(service, None)
        self._manifest.pop(service, None)
        self._seen.pop(service, None)

    def requires_key(self, service: str) -> bool:
        self._reload_if_changed(service)
        return bool(self._by_service.get(service))

    def check(self, service: str, key: str | None, peer: str | None) -> str | None:
        """Returns the id of the caller's key (None for a public service), or raises."""
        self._reload_if_changed(service)
        table = self._by_service.get(service)
        if not table:
            return None
        if key is None:
            audit.warning("no API key for service %s from %s", service, peer or "?")
            raise errors.Unauthorized(f"service {service!r} requires an API key")
        d = _digest(key)
        for digest, kid in table.items():
            if hmac.compare_digest(d, digest):
                return kid
        # Another service's key gets the answer of a wrong key: telling the caller apart
        # would tell them that the key is valid somewhere. Only the audit log says which.
        for other, other_table in self._by_service.items():
            if other != service and any(hmac.compare_digest(d, x) for x in other_table):
                audit.warning("key of service %s used for service %s from %s", other, service, peer or "?")
                break
        else:
            audit.warning("wrong API key for service %s from %s", service, peer or "?")
        raise errors.Unauthorized(f"wrong API key for service {service!r}")
