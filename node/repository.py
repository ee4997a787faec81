"""Repository mode: a node converges to the desired state of a package repository.

`apinode serve --repository DIR|URL` reads `state.json` (:mod:`node.repostate`) at start
and then every `--poll-seconds`: on a directory it watches the file's inode, mtime and
size (the deployer replaces it by a rename); over HTTP it sends a conditional GET
(If-None-Match / If-Modified-Since) and a 304 costs nothing. On each change it converges:
every generation the mapping names that the node lacks (or holds with other content) is
downloaded into the data dir's tmp/, its sha256 compared with the state's, and then given
to the admin plane's push, so it gets the same checks as a push (package verification,
load, test queries); then the mapping switches with the admin plane's zero-downtime switch,
and enabled and pool tuning follow. A service's API keys, when the state carries them, are
written first to the service's api_keys.json (the file :class:`~node.auth.ApiKeys` reads,
as the admin API's key management does) and apply at once.

A failure (download, checksum, load, test queries) leaves the service on what it served:
it is logged, counted in metrics, shown in the status document's `repository` section,
and retried at the next poll, then less often (up to every 30 s) while it keeps failing.
The node reports ready only once a sync has succeeded (`not_ready`).
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import hashlib
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from apz.vocab import PackageError
from node import errors
from node.admin import AdminPlane
from node.keys import write_json
from node.repostate import STATE_FILE, RepoService, RepoState, StateError, check_mapping, loads
from node.supervisor import settings as pool_settings

log = logging.getLogger("node.repository")
_MAX_BACKOFF = 30.0
_CHUNK = 1 << 20


class SyncError(Exception):
    """A step of a sync failed; the message says which and why."""


class _Source(abc.ABC):
    """Where the repository lives: reads the state when it changed, downloads packages."""

    url: str

    @abc.abstractmethod
    async def read_state(self, token: Any) -> tuple[Any, bytes | None] | None:
        """(token, content; None when there is no state file), or None if unchanged since `token`."""
        ...

    @abc.abstractmethod
    async def fetch(self, file: str, dest: Path) -> str:
        """Downloads `file` to `dest`; returns its sha256."""

    async def close(self) -> None:  # optional: only the HTTP source holds a session
        return None


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    async def read_state(self, token: Any) -> tuple[Any, bytes | None] | None:
        path = self.root / STATE_FILE
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None if token == "absent" else ("absent", None)
        except OSError as exc:
            raise SyncError(f"cannot read {path}: {exc}") from None
        # The deployer replaces the file by a rename: a new inode, whatever the clock says.
        new = (st.st_ino, st.st_mtime_ns, st.st_size)
        if new == token:
            return None
        try:
            return new, await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise SyncError(f"cannot read {path}: {exc}") from None

    async def fetch(self, file: str, dest: Path) -> str:
        src = self.root / file
        try:
            f = await asyncio.to_thread(open, src, "rb")
        except OSError as exc:
            raise SyncError(f"cannot read {src}: {exc}") from None
        try:
            with _Download(dest) as out:
                while chunk := await asyncio.to_thread(f.read, _CHUNK):
                    await out.write(chunk)
                return out.sha256()
        except OSError as exc:  # reading the source: writing raised SyncError
            raise SyncError(f"cannot read {src}: {exc}") from None
        finally:
            f.close()


class _Download:
    """A package being written to the data dir: each chunk written (and hashed) in a
    thread, so a slow or full disk never stalls the event loop; a write that fails (the
    disk is full, the file too large) is a SyncError that names the file."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._hash = hashlib.sha256()
        self._out: Any = None

    def __enter__(self) -> _Download:
        try:
            self._out = open(self.dest, "wb")
        except OSError as exc:
            raise SyncError(f"cannot write {self.dest}: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.close()

    def _write(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._hash.update(chunk)

    async def write(self, chunk: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, chunk)
        except OSError as exc:
            raise SyncError(f"cannot write {self.dest}: {exc}") from None

    def sha256(self) -> str:
        try:
            self._out.flush()
        except OSError as exc:
            raise SyncError(f"cannot write {self.dest}: {exc}") from None
        return self._hash.hexdigest()


class _HttpSource(_Source):
    def __init__(self, base: str) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.url = _redact(self.base)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def read_state(self, token: Any) -> tuple[Any, bytes | None] | None:
        headers = {}
        if isinstance(token, tuple):
            etag, modified = token
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
        url = self.base + STATE_FILE
        try:
            async with self._client().get(url, headers=headers) as r:
                if r.status == 304:
                    return None
                if r.status == 404:
                    return None if token == "absent" else ("absent", None)
                if r.status != 200:
                    raise SyncError(f"GET {_redact(url)}: HTTP {r.status} {r.reason}")
                body = await r.read()
                return (r.headers.get("ETag"), r.headers.get("Last-Modified")), body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SyncError(f"GET {_redact(url)}: {exc!r}") from None

    async def fetch(self, file: str, dest: Path) -> str:
        url = self.base + file
        try:
            async with self._client().get(url) as r:
                if r.status != 200:
                    raise SyncError(f"GET {_redact(url)}: HTTP {r.status} {r.reason}")
                with _Download(dest) as out:
                    async for chunk in r.content.iter_chunked(_CHUNK):
                        await out.write(chunk)
                    return out.sha256()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SyncError(f"GET {_redact(url)}: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _redact(url: str) -> str:
    """The URL without its credentials (status, logs and errors show it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_location(where: str) -> str | None:
    """Why `where` (a `--repository` value) cannot be a repository URL, or None. A directory
    is checked by its first poll (it may appear later, as a volume does)."""
    if not where.startswith(("http://", "https://")):
        return None
    try:
        parts = urllib.parse.urlsplit(where)
        parts.port  # noqa: B018  # urlsplit checks the port when it is read
    except ValueError as exc:
        return f"--repository {_redact_text(where)!r} is not a valid URL: {exc}"
    if not parts.hostname:
        return f"--repository {_redact_text(where)!r} is not a valid URL: it has no host"
    return None


def _redact_text(url: str) -> str:
    try:
        return _redact(url)
    except ValueError:  # the URL is too broken for urlsplit: show its scheme only
        return url.split("://", 1)[0] + "://…"


def source_of(where: str) -> _Source:
    if where.startswith(("http://", "https://")):
        return _HttpSource(where)
    return _DirSource(Path(where))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class RepositorySync:
    def __init__(self, admin: AdminPlane, where: str, poll_seconds: float) -> None:
        self.admin = admin
        self.source = source_of(where)
        self.poll_seconds = poll_seconds
        self._token: Any = None
        self._content: bytes | None = None  # the state file's bytes as last read
        self._state: RepoState | None = None  # the last state read (converged or not)
        self._pending = True  # the last state read is not converged yet
        self._failures = 0
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.synced_once = False
        self.last_poll: str | None = None
        self.last_sync: str | None = None
        self.last_sync_unix = 0.0
        self.synced_serial: int | None = None
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.sync_errors = 0
        self.syncs = 0

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="repository poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.source.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # never let the poller die: the node would silently stop converging
                log.exception("repository poll failed")
            await asyncio.sleep(self.poll_seconds)

    # ---- one poll ----------------------------------------------------------------------
    async def poll(self) -> None:
        self.last_poll = _now()
        try:
            changed = await self.source.read_state(self._token)
        except SyncError as exc:
            self._failed(f"state of {self.source.url}: {exc}")
            return
        if changed is not None and changed[1] is not None and changed[1] == self._content:
            # A server without ETag or Last-Modified answers every poll with the whole file:
            # the same bytes are no change (and keep the back-off of a failing sync).
            self._token, changed = changed[0], None
        if changed is not None:
            token, content = changed
            self._token, self._content = token, content  # a broken file is read again only once it changes
            try:
                self._state = loads(content) if content is not None else RepoState()
            except StateError as exc:
                self._failed(f"state of {self.source.url}: {exc}")
                return
            self._pending, self._failures, self._retry_at = True, 0, 0.0
        if not self._pending or self._state is None or time.monotonic() < self._retry_at:
            return
        problems = await self.converge(self._state)
        if problems:
            self._failed("; ".join(problems))
            return
        self._pending, self._failures = False, 0
        self.synced_once = True
        self.syncs += 1
        self.last_sync, self.last_sync_unix = _now(), time.time()
        self.synced_serial = self._state.serial
        if self.last_error is not None:
            log.info("repository: synced serial %d; the earlier error is resolved", self._state.serial)
        self.last_error = None

    def _failed(self, message: str) -> None:
        self.sync_errors += 1
        self._failures += 1
        self._retry_at = time.monotonic() + min(self.poll_seconds * 2 ** (self._failures - 1), _MAX_BACKOFF)
        self.last_error, self.last_error_at = message, _now()
        log.error("repository sync failed (the node keeps serving its last good state): %s", message)

    async def converge(self, state: RepoState) -> list[str]:
        """Brings every service of `state` to its desired state; returns what failed."""
        problems = []
        for sid, want in state.services.items():
            try:
                await self._converge_service(sid, want)
            except (SyncError, StateError, PackageError) as exc:
                problems.append(f"{sid}: {exc}")
            except errors.ApiNodeError as exc:
                problems.append(f"{sid}: {exc.message}")
            except OSError as exc:  # the data dir (a full disk while storing): retried, shown in status
                problems.append(f"{sid}: {exc}")
        return problems

    async def _converge_service(self, sid: str, want: RepoService) -> None:
        self._converge_keys(sid, want)
        if want.mapping is None:
            return  # published, never activated: nothing to serve yet
        svc = self.admin.registry.services.get(sid)
        have = svc.state.generations if svc is not None else {}
        fetch = [v for v in want.serving() if v not in have or have[v].sha256 != want.generations[v].sha256]
        for i, version in enumerate(fetch):
            last = i == len(fetch) - 1
            path = await self._download(sid, version, want)
            try:
                # The last one switches as it lands: loaded and tested once, not twice.
                await self.admin.push(path, mapping=want.mapping if last else None)
                log.info("repository: stored %s %s", sid, version)
            finally:
                path.unlink(missing_ok=True)
        svc = self.admin.registry.service(sid)
        mapping = check_mapping(want.mapping, set(svc.state.generations))
        if svc.state.mapping != mapping:
            await self.admin.set_mapping(sid, mapping)
        if svc.state.enabled != want.enabled:
            await self.admin.set_enabled(sid, want.enabled)
        for endpoint, values in want.tuning.items():
            current = pool_settings.read_override(self.admin.storage.root, sid, endpoint)
            if any(current.get(k) != v for k, v in values.items()):
                await self.admin.set_tuning(sid, endpoint, values)

    def _converge_keys(self, sid: str, want: RepoService) -> None:
        """The state's keys of `sid` become the node's (before any push: a service deployed
        from the repository starts with them)."""
        if want.api_keys is None:
            return  # the repository leaves this service's keys to the node
        keys = self.admin.registry.keys
        try:
            same = keys.override(sid) == want.api_keys
        except errors.ApiNodeError:
            same = False  # an unreadable file is replaced by the state's keys
        if same:
            return
        try:
            write_json(keys.path(sid), {"api_keys": want.api_keys})
        except OSError as exc:
            raise SyncError(f"cannot write the API keys: {exc}") from None
        if sid in self.admin.registry.services:
            keys.reload(sid)  # at once; a service deployed later reads the file when it is set up
        log.warning("repository: API keys of service %s set (%d keys)", sid, len(want.api_keys))

    async def _download(self, sid: str, version: str, want: RepoService) -> Path:
        g = want.generations[version]
        dest = self.admin.storage.tmp / f"repo-{sid}-{version}-{g.sha256[:12]}.apz"
        try:
            sha = await self.source.fetch(g.file, dest)
            if sha != g.sha256:
                raise SyncError(
                    f"{g.file}: sha256 mismatch: the state says {g.sha256[:12]}…, the file has {sha[:12]}… "
                    "(corrupted or replaced after publishing)"
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    # ---- what others see ---------------------------------------------------------------
    def not_ready(self) -> str | None:
        if self.synced_once:
            return None
        why = f": {self.last_error}" if self.last_error else ""
        return f"repository {self.source.url}: not synced yet{why}"

    def status(self) -> dict[str, Any]:
        return {
            "url": self.source.url,
            "pollSeconds": self.poll_seconds,
            "lastPoll": self.last_poll,
            "lastSync": self.last_sync,
            "serial": self.synced_serial,  # the state the node converged to
            "seenSerial": self._state.serial if self._state is not None else None,  # the newest it read
            "etag": _token_text(self._token),
            "synced": self.synced_once and not self._pending,
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at,
            "syncErrors": self.sync_errors,
        }


def _token_text(token: Any) -> str | None:
    if isinstance(token, tuple) and len(token) == 2:  # HTTP: (ETag, Last-Modified)
        return str(token[0] or token[1])
    if isinstance(token, tuple):
        return f"inode {token[0]} mtime_ns {token[1]} size {token[2]}"
    return None if token is None else str(token)


class RepositoryCollector(Collector):
    """apinode_repository_* metrics, read at scrape time."""

    def __init__(self, sync: RepositorySync) -> None:
        self.sync = sync

    def collect(self) -> Iterator[Any]:
        s = self.sync
        errs = CounterMetricFamily("apinode_repository_sync_errors", "Repository polls or syncs that failed")
        errs.add_metric([], s.sync_errors)
        syncs = CounterMetricFamily("apinode_repository_syncs", "States of the repository converged to")
        syncs.add_metric([], s.syncs)
        last = GaugeMetricFamily(
            "apinode_repository_last_sync_timestamp_seconds", "Unix time of the last successful sync (0: never)"
        )
        last.add_metric([], s.last_sync_unix)
        serial = GaugeMetricFamily("apinode_repository_serial", "Serial of the state converged to (-1: none)")
        serial.add_metric([], -1 if s.synced_serial is None else s.synced_serial)
        failing = GaugeMetricFamily("apinode_repository_failing", "1 while the last sync attempt failed")
        failing.add_metric([], 1 if s.last_error else 0)
        yield from (errs, syncs, last, serial, failing)
