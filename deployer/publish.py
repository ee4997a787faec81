"""`apinode deploy ... --repository DIR|URL`: publish to a package repository that nodes poll.

A repository holds the packages (`packages/<service>/<version>-<sha12>.apz`) and one
desired-state file, `state.json` (its format: :mod:`node.repostate`). Every command reads
the state, changes it, and writes it back whole, atomically:

- a directory: a temporary file in the same directory, fsynced, then renamed over the old
  one (an flock on `.state.lock` keeps two publishers from interleaving);
- an HTTP(S) base URL: `PUT` (nginx's WebDAV module, Artifactory and Nexus store the body
  whole before it replaces the old file). The package is uploaded before the state that
  names it. Nodes poll with If-None-Match: if a write leaves the validators unchanged
  (nginx's ETag is mtime-in-seconds and size), it is rewritten a second later.

`--wait` then follows the nodes (:mod:`deployer.converge`) until they serve the new state.
"""

from __future__ import annotations

import abc
import argparse
import base64
import contextlib
import fcntl
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployer.errors import EXIT_OK, DeployError, UsageError
from deployer.models import Mapping
from deployer.output import Output, upload_bar
from deployer.packagefile import CHUNK, open_package
from node.errors import ApiNodeError
from node.repostate import STATE_FILE, RepoGeneration, RepoService, RepoState, StateError, loads
from node.supervisor import settings as pool_settings


class _Store(abc.ABC):
    where: str

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    @abc.abstractmethod
    def read(self) -> RepoState: ...

    @abc.abstractmethod
    def has(self, file: str, size: int) -> bool: ...

    @abc.abstractmethod
    def get(self, file: str) -> bytes: ...

    @abc.abstractmethod
    def upload(self, file: str, src: Path, on_progress: Any) -> None: ...

    @abc.abstractmethod
    def write(self, state: RepoState) -> None: ...


def _parse(data: bytes, where: str) -> RepoState:
    try:
        return loads(data)
    except StateError as exc:
        raise DeployError(f"{where}: not a repository state: {exc}") from None


class _DirStore(_Store):
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UsageError(f"repository {root} is not a directory (create it first)")
        self.root = root
        self.where = str(root)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with open(self.root / ".state.lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self) -> RepoState:
        path = self.root / STATE_FILE
        if not path.exists():
            return RepoState()
        return _parse(path.read_bytes(), str(path))

    def has(self, file: str, size: int) -> bool:
        path = self.root / file
        return path.is_file() and path.stat().st_size == size

    def get(self, file: str) -> bytes:
        try:
            return (self.root / file).read_bytes()
        except OSError as exc:
            raise DeployError(f"cannot read {self.root / file}: {exc}") from None

    def upload(self, file: str, src: Path, on_progress: Any) -> None:
        size = src.stat().st_size
        with open(src, "rb") as f:
            self._atomic(self.root / file, _chunks(f, size, on_progress))

    def write(self, state: RepoState) -> None:
        self._atomic(self.root / STATE_FILE, iter([state.dumps()]))

    def _atomic(self, path: Path, chunks: Iterator[bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from nodes running as another user
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)  # the rename itself survives a crash
        finally:
            os.close(dirfd)


def _chunks(f: Any, size: int, on_progress: Any) -> Iterator[bytes]:
    sent = 0
    on_progress(0, size)
    while chunk := f.read(CHUNK):
        sent += len(chunk)
        yield chunk
        on_progress(sent, size)


class _HttpStore(_Store):
    """Over HTTP(S) with the standard library (the deployer needs no HTTP client package):
    credentials in the URL (`https://user:token@host/path/`) go as Basic authorization."""

    def __init__(self, base: str, timeout: float) -> None:
        base = base if base.endswith("/") else base + "/"
        parts = urllib.parse.urlsplit(base)
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            secret = urllib.parse.unquote(parts.password or "")
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
            netloc = parts.hostname or ""
            netloc += f":{parts.port}" if parts.port else ""
            base = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        self.base = self.where = base
        self.timeout = timeout

    def _request(self, method: str, file: str, body: Any = None, size: int | None = None) -> tuple[int, Any, bytes]:
        url = self.base + file
        headers = dict(self.headers)
        if size is not None:
            headers["Content-Length"] = str(size)
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DeployError(f"{method} {url}: {exc}") from None

    def _validators(self) -> tuple[str | None, str | None]:
        code, headers, _ = self._request("HEAD", STATE_FILE)
        return (headers.get("ETag"), headers.get("Last-Modified")) if code == 200 else (None, None)

    def read(self) -> RepoState:
        code, _, body = self._request("GET", STATE_FILE)
        if code == 404:
            return RepoState()
        if code != 200:
            raise DeployError(f"GET {self.base}{STATE_FILE}: HTTP {code}")
        return _parse(body, self.base + STATE_FILE)

    def has(self, file: str, size: int) -> bool:
        code, headers, _ = self._request("HEAD", file)
        return code == 200 and headers.get("Content-Length") == str(size)

    def get(self, file: str) -> bytes:
        code, _, body = self._request("GET", file)
        if code != 200:
            raise DeployError(f"GET {self.base}{file}: HTTP {code}")
        return bytes(body)

    def upload(self, file: str, src: Path, on_progress: Any) -> None:
        size = src.stat().st_size
        with open(src, "rb") as f:
            self._put(file, _Body(f, size, on_progress), size)

    def write(self, state: RepoState) -> None:
        before = self._validators()
        data = state.dumps()
        self._put(STATE_FILE, data, len(data))
        if before != (None, None) and self._validators() == before:
            time.sleep(1.05)  # same second, same size: nodes would get 304; a new mtime differs
            self._put(STATE_FILE, data, len(data))

    def _put(self, file: str, body: Any, size: int) -> None:
        code, _, text = self._request("PUT", file, body, size)
        if code not in (200, 201, 204):
            raise DeployError(f"PUT {self.base}{file}: HTTP {code} {text[:200].decode(errors='replace')}")


class _Body:
    """A file as a request body that reports progress (urllib streams an iterable body
    whose Content-Length is given)."""

    def __init__(self, f: Any, size: int, on_progress: Any) -> None:
        self.f, self.size, self.on_progress = f, size, on_progress

    def __iter__(self) -> Iterator[bytes]:
        return _chunks(self.f, self.size, self.on_progress)

    def __len__(self) -> int:
        return self.size


def store_of(where: str, timeout: float = 120.0) -> _Store:
    if where.startswith(("http://", "https://")):
        return _HttpStore(where, timeout)
    return _DirStore(Path(where))


# ---- commands --------------------------------------------------------------------------
def _service(state: RepoState, sid: str) -> RepoService:
    svc = state.services.get(sid)
    if svc is None:
        raise DeployError(f"the repository has no service {sid!r}", code="NOT_FOUND")
    return svc


def _mapping_doc(m: Mapping) -> dict[str, Any]:
    return {"mode": m.mode, "entries": [{"generation": e.generation, "proba": e.proba} for e in m.entries]}


def _switch(svc: RepoService, mapping: dict[str, Any]) -> None:
    try:
        svc.set_mapping(mapping)
    except StateError as exc:
        raise DeployError(str(exc), code="NOT_FOUND") from None


def cmd_repository(args: argparse.Namespace, out: Output) -> int:
    """Every repository action: read the state, change it, write it, then maybe --wait."""
    store = store_of(args.repository, args.timeout)
    action = args.deploy_command
    if action == "tune" and not args.settings:
        svc = _service(store.read(), args.service)
        values = svc.tuning.get(args.endpoint, {})
        if out.json_mode:
            out.json({"service": args.service, "endpoint": args.endpoint, "pool": values})
        else:
            out.note(f"{args.service}/{args.endpoint} in {store.where}: {values or 'the package settings'}")
        return EXIT_OK
    pkg = open_package(args.package) if action == "publish" else None
    with store.lock():
        state = store.read()
        if pkg is not None:
            sid = pkg.service
            sha = pkg.sha256()
            file = f"packages/{sid}/{pkg.version}-{sha[:12]}.apz"
            if not store.has(file, pkg.size):
                with upload_bar(out.err, f"{store.where} ← {pkg.path.name}", not out.quiet) as on_progress:
                    store.upload(file, pkg.path, on_progress)
            svc = state.services.setdefault(sid, RepoService())
            svc.generations[pkg.version] = RepoGeneration(file, sha)
            if args.activate:
                _switch(svc, {"mode": "random", "entries": [{"generation": pkg.version, "proba": 1.0}]})
            elif args.mapping is not None:
                _switch(svc, _mapping_doc(Mapping.parse(args.mapping, hash_mode=args.hash)))
        else:
            sid = args.service
            svc = _service(state, sid)
            if action == "activate":
                _switch(svc, {"mode": "random", "entries": [{"generation": args.generation, "proba": 1.0}]})
            elif action == "mapping":
                _switch(svc, _mapping_doc(Mapping.parse(args.mapping, hash_mode=args.hash)))
            elif action == "rollback":
                _rollback(svc, sid)
            elif action in ("enable", "disable"):
                svc.enabled = action == "enable"
            elif action == "tune":
                _tune(svc, args)
            else:
                raise UsageError(f"{action} does not work on a repository (use --node)")
        state.bump()
        store.write(state)
    summary = _describe(sid, svc)
    if not out.json_mode:
        out.note(f"{store.where}: state {state.serial}: {summary}")
    if getattr(args, "wait", False):
        from deployer.converge import wait_for_nodes

        return wait_for_nodes(args, out, state, sid)
    if out.json_mode:
        out.json({"repository": store.where, "serial": state.serial, "service": sid, "state": summary})
    return EXIT_OK


def _rollback(svc: RepoService, sid: str) -> None:
    while svc.history:
        previous = svc.history.pop()
        if all(e.get("generation") in svc.generations for e in previous.get("entries", [])):
            svc.mapping = None  # the popped mapping is not remembered again
            _switch(svc, previous)
            return
    raise DeployError(f"service {sid!r} has no earlier mapping to roll back to", code="FAILED_PRECONDITION")


def _tune(svc: RepoService, args: argparse.Namespace) -> None:
    from deployer.commands import _tuning_values

    values = _tuning_values(args.settings)
    merged = {**svc.tuning.get(args.endpoint, {}), **values}
    try:
        pool_settings.validate(merged, f"tuning of {args.service}/{args.endpoint}")
    except ApiNodeError as exc:
        raise UsageError(exc.message) from None
    svc.tuning[args.endpoint] = merged


def _describe(sid: str, svc: RepoService) -> str:
    if svc.mapping is None:
        return f"{sid} stores {', '.join(svc.generations)} (nothing active: activate or map a generation)"
    parts = ", ".join(f"{e['generation']}={e['proba']:g}" for e in svc.mapping["entries"])
    return f"{sid} serves {parts} ({svc.mapping['mode']}){'' if svc.enabled else ' (disabled)'}"


# ---- command-line wiring (deployer/cli.py) ----------------------------------------------
def add_repository_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("repository")
    g.add_argument(
        "--repository",
        required=required,
        metavar="DIR|URL",
        help="change a package repository's state instead of a node (nodes serve --repository it)",
    )
    add_wait_args(g)


def add_wait_args(g: Any) -> None:
    """`--wait` and the nodes it follows (deployer.converge)."""
    g.add_argument("--wait", action="store_true", help="then wait until every node serves the new state")
    g.add_argument("--nodes", metavar="HOST:PORT,...", help="with --wait: the nodes' gRPC addresses")
    g.add_argument("--nodes-dns", metavar="NAME:PORT", help="with --wait: every A record of NAME (headless Service)")
    g.add_argument("--wait-timeout", type=float, default=300.0, metavar="S", help="with --wait (default 300)")


def or_repository(handler: Any) -> Any:
    """`handler` for a node, :func:`cmd_repository` when the command names a repository."""

    def run(args: argparse.Namespace, out: Output) -> int:
        if getattr(args, "repository", None):
            return cmd_repository(args, out)
        if getattr(args, "wait", False):
            raise UsageError("--wait goes with --repository")
        code: int = handler(args, out)
        return code

    return run
