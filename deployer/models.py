"""The admin API's answers as plain, typed Python values (and back to JSON for `--json`).

The generated protobuf classes stay inside :mod:`deployer.client`; everything above it
(CLI, rollout, dev loop, library users) sees these frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import UsageError
from node._proto.apinode.v1 import admin_pb2

MAPPING_MODES = ("random", "hash")


@dataclass(frozen=True, slots=True)
class MappingEntry:
    generation: str
    proba: float


@dataclass(frozen=True, slots=True)
class Mapping:
    """How a service splits its traffic between generations."""

    entries: tuple[MappingEntry, ...]
    mode: str = "random"

    @classmethod
    def single(cls, generation: str) -> Mapping:
        return cls((MappingEntry(generation, 1.0),))

    @classmethod
    def parse(cls, text: str, *, hash_mode: bool = False) -> Mapping:
        """`"v1=0.9,v2=0.1"` -> a mapping; raises UsageError when it cannot serve."""
        entries = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            gen, sep, proba = part.partition("=")
            if not sep or not gen.strip():
                raise UsageError(f"bad mapping entry {part!r}: expected GENERATION=PROBA")
            try:
                value = float(proba)
            except ValueError:
                raise UsageError(f"bad probability {proba!r} for {gen.strip()}") from None
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"probability of {gen.strip()} must be in [0, 1], got {value:g}")
            entries.append(MappingEntry(gen.strip(), value))
        if not entries:
            raise UsageError("empty mapping: expected e.g. v1=0.9,v2=0.1")
        names = [e.generation for e in entries]
        if len(set(names)) != len(names):
            raise UsageError(f"a generation appears twice in the mapping {text!r}")
        total = math.fsum(e.proba for e in entries)
        if abs(total - 1.0) > 1e-6:
            raise UsageError(f"mapping probabilities must sum to 1, they sum to {total:g}")
        return cls(tuple(entries), "hash" if hash_mode else "random")

    def describe(self) -> str:
        parts = ", ".join(f"{e.generation}={e.proba:g}" for e in self.entries)
        return f"{parts} ({self.mode})" if parts else "(none)"

    def to_pb(self) -> admin_pb2.Mapping:
        return admin_pb2.Mapping(
            mode=self.mode,
            entries=[admin_pb2.MappingEntry(generation=e.generation, proba=e.proba) for e in self.entries],
        )

    @classmethod
    def from_pb(cls, m: admin_pb2.Mapping) -> Mapping:
        entries = tuple(MappingEntry(e.generation, e.proba) for e in m.entries)
        return cls(entries, m.mode or "random")


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    generation: str
    loaded: bool
    active: bool
    share: float
    sha256: str
    stored_at: str
    endpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceState:
    service: str
    enabled: bool
    mapping: Mapping
    generations: tuple[GenerationInfo, ...]

    @property
    def serving(self) -> list[str]:
        return [e.generation for e in self.mapping.entries if e.proba > 0]

    def generation(self, name: str) -> GenerationInfo | None:
        return next((g for g in self.generations if g.generation == name), None)

    @classmethod
    def from_pb(cls, s: admin_pb2.ServiceState) -> ServiceState:
        gens = tuple(
            GenerationInfo(
                g.generation,
                g.loaded,
                g.active,
                g.share,
                g.sha256,
                g.stored_at,
                tuple(g.endpoints),
            )
            for g in s.generations
        )
        return cls(s.service, s.enabled, Mapping.from_pb(s.mapping), gens)


@dataclass(frozen=True, slots=True)
class TestQueryResult:
    endpoint: str
    index: int
    ok: bool
    error: str
    latency_ms: float
    response: Any = None
    generation: str = ""  # the generation that answered, when the transport says so

    @classmethod
    def from_pb(cls, t: admin_pb2.TestQueryResult) -> TestQueryResult:
        try:
            response = json.loads(t.response_json) if t.response_json else None
        except ValueError:
            response = t.response_json
        return cls(t.endpoint, t.index, t.ok, t.error, t.latency_ms, response)


@dataclass(frozen=True, slots=True)
class PushResult:
    service: str
    generation: str
    new: bool
    activated: bool
    tests: tuple[TestQueryResult, ...]
    state: ServiceState | None

    @classmethod
    def from_pb(cls, r: admin_pb2.PushResult) -> PushResult:
        return cls(
            r.service,
            r.generation,
            r.new,
            r.activated,
            tuple(TestQueryResult.from_pb(t) for t in r.tests),
            ServiceState.from_pb(r.state) if r.HasField("state") else None,
        )


@dataclass(frozen=True, slots=True)
class Tuning:
    service: str
    endpoint: str
    pool: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_pb(cls, t: admin_pb2.Tuning) -> Tuning:
        return cls(t.service, t.endpoint, dict(sorted(t.pool.items())), t.source)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    service: str
    generation: str
    endpoint: str
    type: str
    ready: bool
    not_ready_reason: str
    workers_busy: int
    workers_idle: int
    workers_starting: int
    queue_depth: int
    served: int
    rejected: int
    timed_out: int
    crashed: int
    restarts: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    ready: bool
    endpoints: tuple[EndpointStatus, ...]
    document: dict[str, Any]  # the node's full status document (GET /admin/status)

    @classmethod
    def from_pb(cls, s: admin_pb2.StatusResponse) -> NodeStatus:
        eps = tuple(
            EndpointStatus(
                e.service,
                e.generation,
                e.endpoint,
                e.type,
                e.ready,
                e.not_ready_reason,
                e.workers_busy,
                e.workers_idle,
                e.workers_starting,
                e.queue_depth,
                e.served,
                e.rejected,
                e.timed_out,
                e.crashed,
                e.restarts,
            )
            for e in s.endpoints
        )
        try:
            doc = json.loads(s.json) if s.json else {}
        except ValueError:
            doc = {}
        return cls(s.ready, eps, doc if isinstance(doc, dict) else {})


def to_json(value: Any) -> Any:
    """Dataclasses (nested, in tuples and dicts) -> JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value
