"""Rolling deployment of one package over the nodes of an infrastructure file.

    nodes:
      - name: a
        grpc: 10.0.0.1:12001
        http: http://10.0.0.1:12000     # optional: test queries over JSON HTTP
        admin_key: ...                  # optional (or admin_key_env: VAR)
        api_key_env: FRAUD_KEY          # the service's API key for the test queries (or api_key)
        tls_ca: ca.crt                  # TLS (tls_cert/tls_key: mutual TLS; tls: true: system CAs)

One node at a time: push (activating, or under a mapping), wait for the gRPC health check
to say SERVING, play the package's test queries through the node's public API, then the
next node. The first failure stops the rollout there; with `rollback_on_failure` the nodes
already switched (the failing one included, if it switched) go back to what they served.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.client import AdminClient
from deployer.errors import DeployError, Unreachable, UsageError
from deployer.localkey import local_admin_key
from deployer.models import Mapping, ServiceState
from deployer.packagefile import LocalPackage, TestQuery
from deployer.testplay import play_grpc, play_http
from deployer.transport import Tls

ProgressFactory = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]
Notify = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    grpc: str
    http: str | None = None
    admin_key: str | None = None
    api_key: str | None = None  # the service's API key, for the test queries
    tls: Tls | None = None


_KEYS = ("admin_key", "api_key")
_TLS_KEYS = ("tls", "tls_ca", "tls_cert", "tls_key")
_SHARED = {*_KEYS, *(f"{k}_env" for k in _KEYS), *_TLS_KEYS}  # top level: defaults for every node
_NODE_KEYS = {"name", "grpc", "http", *_SHARED}


def _key(entry: dict[str, Any], name: str, where: str) -> str | None:
    """`name: VALUE` or `name_env: VARIABLE` (read now: a missing variable stops here)."""
    value = entry.get(name)
    var = entry.get(f"{name}_env")
    if value is not None and var is not None:
        raise UsageError(f"{where}: give {name} or {name}_env, not both")
    if var is not None:
        value = os.environ.get(str(var))
        if value is None:
            raise UsageError(f"{where}: environment variable {var} ({name}_env) is not set")
    return str(value) if value is not None else None


def _tls(entry: dict[str, Any], base: Path, where: str) -> Tls | None:
    paths = {}
    for k in ("tls_ca", "tls_cert", "tls_key"):
        v = entry.get(k)
        if v is not None and not isinstance(v, str):
            raise UsageError(f"{where}: {k} must be a file path")
        paths[k] = base / v if v else None
    enabled = entry.get("tls")
    if enabled is not None and not isinstance(enabled, bool):
        raise UsageError(f"{where}: tls must be true or false")
    if enabled is False:
        return None
    return Tls.of(paths["tls_ca"], paths["tls_cert"], paths["tls_key"], enabled=bool(enabled), where=f"{where}: ")


def load_infra(path: Path) -> list[NodeSpec]:
    """Reads an infrastructure file; UsageError (exit 2) says what is wrong with it.

    Keys at the top level (next to `nodes`) are defaults for every node; a node's own win.
    TLS file paths are relative to the file's folder.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read infrastructure file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(nodes, list) or not nodes:
        raise UsageError(
            f"{path}: expected 'nodes:' with a list of {{name, grpc, http?, admin_key?, api_key?, tls_ca?}}"
        )
    unknown = set(doc) - {"nodes", *_SHARED}
    if unknown:
        raise UsageError(
            f"{path}: unknown top-level keys {sorted(unknown)} (known: nodes, {', '.join(sorted(_SHARED))})"
        )
    base = path.parent
    out: list[NodeSpec] = []
    for i, n in enumerate(nodes):
        where = f"{path}: nodes[{i}]"
        if not isinstance(n, dict):
            raise UsageError(f"{where} must be a mapping with name and grpc")
        unknown = set(n) - _NODE_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown keys {sorted(unknown)}")
        grpc_target = n.get("grpc")
        if not isinstance(grpc_target, str) or ":" not in grpc_target:
            raise UsageError(f"{where}: 'grpc' must be HOST:PORT, got {grpc_target!r}")
        name = str(n.get("name") or grpc_target)
        http = n.get("http")
        if http is not None and not (isinstance(http, str) and http.startswith(("http://", "https://"))):
            raise UsageError(f"{where}: 'http' must be a URL like http://host:port, got {http!r}")
        # A node's own setting wins over the file's default (either of VALUE or VALUE_env).
        merged = {k: v for k, v in doc.items() if k in _SHARED}
        for k in _KEYS:
            if k in n or f"{k}_env" in n:
                merged.pop(k, None)
                merged.pop(f"{k}_env", None)
        if any(k in n for k in _TLS_KEYS):
            for k in _TLS_KEYS:
                merged.pop(k, None)
        merged.update({k: v for k, v in n.items() if k in _SHARED})
        out.append(
            NodeSpec(
                name,
                grpc_target,
                http,
                admin_key=_key(merged, "admin_key", where),
                api_key=_key(merged, "api_key", where),
                tls=_tls(merged, base, where),
            )
        )
    names = [n.name for n in out]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: node names must be unique")
    return out


@dataclass(slots=True)
class NodeOutcome:
    node: str
    target: str
    status: str = "pending"  # ok | failed | rolled back | not restored | skipped | pending
    step: str = ""  # where it failed: push | health | tests
    message: str = ""
    generation: str = ""
    tests_passed: int = 0
    tests_total: int = 0
    _before: ServiceState | None = field(default=None, repr=False)
    _after: ServiceState | None = field(default=None, repr=False)

    def note(self, message: str) -> None:
        self.message = f"{self.message}; {message}" if self.message else message

    def to_json(self) -> dict[str, Any]:
        keys = ("node", "target", "status", "step", "message", "generation", "tests_passed", "tests_total")
        return {k: getattr(self, k) for k in keys}


@dataclass(slots=True)
class RolloutResult:
    service: str
    generation: str
    outcomes: list[NodeOutcome]

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def stopped_at(self) -> NodeOutcome | None:
        return next((o for o in self.outcomes if o.step), None)

    def to_json(self) -> dict[str, Any]:
        stop = self.stopped_at
        return {
            "service": self.service,
            "generation": self.generation,
            "ok": self.ok,
            "stopped_at": {"node": stop.node, "step": stop.step, "message": stop.message} if stop else None,
            "nodes": [o.to_json() for o in self.outcomes],
        }


@contextlib.contextmanager
def _no_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    yield lambda sent, total: None


class Rollout:
    def __init__(
        self,
        package: LocalPackage,
        nodes: list[NodeSpec],
        *,
        mapping: Mapping | None = None,
        default_admin_key: str | None = None,
        local_data_dir: Path | None = None,
        default_api_key: str | None = None,
        default_tls: Tls | None = None,
        timeout: float = 120.0,
        health_timeout: float = 30.0,
        rollback_on_failure: bool = False,
        progress: ProgressFactory = _no_progress,
        notify: Notify = lambda message: None,
    ) -> None:
        self.package = package
        self.nodes = nodes
        self.mapping = mapping
        self.default_admin_key = default_admin_key
        self.local_data_dir = local_data_dir
        self.default_api_key = default_api_key
        self.default_tls = default_tls
        self.timeout = timeout
        self.health_timeout = health_timeout
        self.rollback_on_failure = rollback_on_failure
        self.progress = progress
        self.notify = notify
        self._queries: list[TestQuery] = []

    def _client(self, node: NodeSpec) -> AdminClient:
        key = node.admin_key if node.admin_key is not None else self.default_admin_key
        key = key or local_admin_key(self.local_data_dir, node.grpc)  # a node on this machine
        return AdminClient(node.grpc, key, timeout=self.timeout, tls=self._tls(node))

    def _tls(self, node: NodeSpec) -> Tls | None:
        return node.tls if node.tls is not None else self.default_tls

    def run(self) -> RolloutResult:
        self._queries = self.package.test_queries()  # a bad file fails before any node
        outcomes = [NodeOutcome(n.name, n.grpc) for n in self.nodes]
        result = RolloutResult(self.package.service, self.package.version, outcomes)
        for i, (node, outcome) in enumerate(zip(self.nodes, outcomes, strict=True)):
            self.notify(f"[{i + 1}/{len(self.nodes)}] {node.name} ({node.grpc})")
            with self._client(node) as client:
                self._deploy_one(client, node, outcome)
            if outcome.status != "ok":
                for later in outcomes[i + 1 :]:
                    later.status, later.message = "skipped", f"rollout stopped at {node.name}"
                if self.rollback_on_failure:
                    self._restore(outcomes[: i + 1])
                break
        return result

    def _deploy_one(self, client: AdminClient, node: NodeSpec, outcome: NodeOutcome) -> None:
        step = "push"
        try:
            outcome._before = client.find_service(self.package.service)
            with self.progress(f"{node.name}: {self.package.path.name}") as on_progress:
                pushed = client.push(
                    self.package,
                    activate=self.mapping is None,
                    mapping=self.mapping,
                    on_progress=on_progress,
                )
            outcome.generation, outcome._after = pushed.generation, pushed.state
            step = "health"
            health = client.wait_serving(self.health_timeout)
            if health != "SERVING":
                raise DeployError(f"health check says {health} after {self.health_timeout:g} s")
            step = "tests"
            self._check_tests(node, pushed.generation, outcome)
        except Unreachable as exc:
            outcome.status, outcome.step, outcome.message = "failed", "connect", exc.message
            return
        except DeployError as exc:
            outcome.status, outcome.step, outcome.message = "failed", step, exc.message
            return
        outcome.status = "ok"

    def _check_tests(self, node: NodeSpec, generation: str, outcome: NodeOutcome) -> None:
        queries = self._queries
        # With a mapping, pin the queries to the new generation: it is the one to check.
        forced = generation if self.mapping is not None else None
        api_key = node.api_key if node.api_key is not None else self.default_api_key
        play, where = (play_http, node.http) if node.http else (play_grpc, node.grpc)
        results = play(
            where,
            self.package.service,
            queries,
            api_key=api_key,
            forced_generation=forced,
            timeout=self.timeout,
            tls=self._tls(node),
        )
        outcome.tests_total = len(results)
        outcome.tests_passed = sum(r.ok for r in results)
        failed = [r for r in results if not r.ok]
        if failed:
            f = failed[0]
            raise DeployError(
                f"test query #{f.index} of {f.endpoint} failed: {f.error} ({len(failed)} of {len(results)} failed)"
            )
        if self.mapping is None:
            wrong = [r for r in results if r.generation and r.generation != generation]
            if wrong:
                raise DeployError(
                    f"test query #{wrong[0].index} of {wrong[0].endpoint} was answered by "
                    f"generation {wrong[0].generation}, not {generation}"
                )

    def _restore(self, outcomes: list[NodeOutcome]) -> None:
        """Puts the nodes that switched back on what they served before, last first."""
        for node, outcome in reversed(list(zip(self.nodes, outcomes, strict=False))):
            before, after = outcome._before, outcome._after
            if after is None:  # refused or never reached: it still serves what it served
                continue
            if before is not None and before.mapping == after.mapping:
                old, new = before.generation(outcome.generation), after.generation(outcome.generation)
                if old is not None and new is not None and old.sha256 != new.sha256:
                    outcome.status = "not restored"
                    outcome.note(f"{outcome.generation} was replaced in place: push the old package again")
                else:
                    outcome.note("it already served this: nothing to restore")
                continue
            self.notify(f"restoring {node.name}")
            try:
                with self._client(node) as client:
                    if before is None or not before.mapping.entries:
                        client.disable(self.package.service)  # it served nothing before
                        how = "service disabled (it was not serving before)"
                    else:
                        state = client.rollback(self.package.service)
                        how = f"back to {state.mapping.describe()}"
                outcome.status = "rolled back"
                outcome.note(how)
            except DeployError as exc:
                outcome.status = "not restored"
                outcome.note(f"rollback failed: {exc.message}")
