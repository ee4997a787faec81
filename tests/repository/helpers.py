"""A fleet of real nodes serving from one package repository, and a load spread over them."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from deployer.client import AdminClient
from tests import nodeproc
from tests.deployer.conftest import make_package
from tests.nodeclient import NodeClient

KEY = "repository-tests-admin-key"


def node_args(repository: str) -> list[str]:
    return ["--repository", repository, "--poll-seconds", "0.3", "--admin-key", KEY]


def status(node: NodeClient) -> dict[str, Any]:
    """The node's status document (GET /admin/status), over the admin gRPC API with KEY."""
    with AdminClient(node.grpc, KEY, timeout=30) as client:
        return client.status().document


def pool(node: NodeClient, service: str = "svc", endpoint: str = "ver") -> dict[str, Any]:
    svc = status(node)["services"][service]
    return svc["generations"][svc["active"]][endpoint]  # type: ignore[no-any-return]


def wait_ready(node: NodeClient, timeout: float = 90.0) -> list[int]:
    """Polls /ready until 200; returns the statuses seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = requests.get(node.http + "/ready", timeout=10).status_code
        seen.append(code)
        if code == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"node not ready in {timeout} s: {status(node).get('notReady')}\n{node.log()[-3000:]}")


def served(node: NodeClient) -> str:
    """The version the node's `svc/ver` answers (and its apiContext agrees)."""
    r = requests.post(node.url("svc", "ver", "run"), json={}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["apiContext"]["serviceGeneration"] == body["response"]["version"]
    return str(body["response"]["version"])


@dataclass
class Fleet:
    repository: str  # a directory or an http:// URL
    www: Path  # where the repository's files are on disk (nginx's root for HTTP)
    pkgdir: Path
    nodes: list[NodeClient] = field(default_factory=list)
    # how a node starts: a subprocess by default, or tests.inproc.start_node
    start_node: Callable[..., NodeClient] = nodeproc.start_node
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    def package(self, **kw: Any) -> tuple[str, Path]:
        version = f"v{next(self._versions)}"
        return version, make_package(self.pkgdir, version, **kw)

    def start(self, name: str) -> NodeClient:
        node = self.start_node(self.pkgdir.parent / name, args=node_args(self.repository))
        self.nodes.append(node)
        return node

    @property
    def grpc_targets(self) -> str:
        return ",".join(n.grpc for n in self.nodes)


class Load:
    """Threads sending `run` calls round-robin over nodes: sent, ok, failed (an answer other
    than 200), lost (no answer: connection refused or reset, timeout)."""

    def __init__(self, nodes: list[NodeClient], threads: int = 4) -> None:
        self.urls = [n.url("svc", "ver", "run") for n in nodes]
        self.counts: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, offset: int) -> None:
        http = requests.Session()
        for i in itertools.count(offset):
            if self._stop.is_set():
                return
            url = self.urls[i % len(self.urls)]
            outcome, version = "ok", ""
            try:
                r = http.post(url, json={}, timeout=30)
                if r.status_code == 200:
                    version = r.json()["response"]["version"]
                else:
                    outcome = "failed"
                    self._error(f"{url}: {r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                outcome = "lost"
                self._error(f"{url}: {exc!r}")
            with self._lock:
                self.counts["sent"] += 1
                self.counts[outcome] += 1
                if version:
                    self.versions[version] += 1

    def _error(self, message: str) -> None:
        with self._lock:
            if len(self.errors) < 10:
                self.errors.append(message)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
