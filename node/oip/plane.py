"""The Open Inference Protocol's operations, in plain Python, for its HTTP and gRPC routes.

A model is a prediction endpoint of an active service (:mod:`node.oip.model`); its versions
are the service's loaded generations, and the unversioned model follows the service's
mapping. `infer` turns the input tensors into a predict-multi body and runs it through
:meth:`DataPlane.call`, so the pool, batching, enrichment, API keys, limits, metrics and
query log are those of the Dataiku API; a version is a `forcedGeneration`. Every call needs
the service's API key when it has some (metadata included: it describes the model).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from apz.specs import EndpointSpec
from node import errors
from node.dataplane import DataPlane
from node.lookup import Enricher
from node.oip import model as m
from node.oip.tensors import Tensor
from node.registry import Endpoint, Generation, Service

SERVER_NAME = "apinode"
SERVER_VERSION = "0.1.0"
_MAX_SIGNATURES = 1024
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration", "schedule_policy"]


@dataclass(slots=True)
class InferResult:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


@dataclass(slots=True)
class _Stats:
    """Triton's cumulative statistics of one model version, for the OIP calls it answered."""

    last_inference: int = 0  # ms since the epoch
    inference_count: int = 0  # rows
    execution_count: int = 0  # requests
    ns: dict[str, list[int]] = field(default_factory=dict)  # what -> [count, ns]

    def add(self, what: str, ns: int) -> None:
        entry = self.ns.setdefault(what, [0, 0])
        entry[0] += 1
        entry[1] += ns

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        durations = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: dict(zip(("count", "ns"), self.ns.get(k, [0, 0]), strict=True)) for k in durations},
            "batch_stats": [],
        }


class OipPlane:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self.registry = dataplane.registry
        self._stats: dict[tuple[str, str], _Stats] = {}
        # spec id -> (spec, its enricher, weakly: a dataset is not kept after its generation goes)
        self._signatures: dict[int, tuple[EndpointSpec, weakref.ref[Enricher] | None, m.Signature]] = {}

    def signature(self, ep: Endpoint) -> m.Signature:
        """The endpoint's inputs, computed once per endpoint of a loaded generation."""
        hit = self._signatures.get(id(ep.spec))
        if hit is not None and hit[0] is ep.spec and (hit[1]() if hit[1] is not None else None) is ep.enricher:
            return hit[2]
        sig = m.signature(ep.spec, ep.enricher)
        if len(self._signatures) >= _MAX_SIGNATURES:  # generations come and go: never grow without bound
            self._signatures.clear()
        enricher = weakref.ref(ep.enricher) if ep.enricher is not None else None
        self._signatures[id(ep.spec)] = (ep.spec, enricher, sig)
        return sig

    # ---- server ------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def ready(self) -> bool:
        return self.dp.readiness()[0]

    # ---- models ------------------------------------------------------------------------
    def _service(self, name: str) -> tuple[Service, str]:
        service, endpoint = m.split_name(name)
        svc = self.registry.services.get(service)
        if svc is None or not svc.state.enabled:
            raise errors.NotFound(f"unknown model {name!r}: service {service!r} is not served by this node")
        return svc, endpoint

    def find(
        self, name: str, version: str = "", *, api_key: str | None = None, peer: str | None = None
    ) -> tuple[Service, Generation, Endpoint]:
        """The model's generation (the version asked for, else the active one) and endpoint;
        checks the caller's API key."""
        svc, endpoint = self._service(name)
        self.dp.keys.check(svc.id, api_key, peer)
        if version:
            gen = svc.loaded.get(version)
            if gen is None:
                raise errors.NotFound(f"model {name!r} has no version {version!r} (it has: {', '.join(svc.loaded)})")
        else:
            active = next((v for v in self.registry.serving(svc) if v in svc.loaded), None)
            if active is None:
                raise errors.NotFound(f"model {name!r} has no active version")
            gen = svc.loaded[active]
        ep = gen.endpoints.get(endpoint)
        if ep is None or ep.spec.type != "prediction" or ep.pool is None:
            raise errors.NotFound(f"unknown model {name!r}: service {svc.id!r} has no prediction endpoint {endpoint!r}")
        return svc, gen, ep

    def model_metadata(self, name: str, version: str = "", **who: Any) -> dict[str, Any]:
        svc, _, ep = self.find(name, version, **who)
        versions = [v for v, g in svc.loaded.items() if ep.spec.id in g.endpoints]
        return m.metadata(name, versions, ep.spec, self.signature(ep))

    def model_ready(self, name: str, version: str = "", **who: Any) -> bool:
        _, _, ep = self.find(name, version, **who)
        assert ep.pool is not None
        return ep.pool.ready

    def model_config(self, name: str, version: str = "", **who: Any) -> dict[str, Any]:
        _, _, ep = self.find(name, version, **who)
        assert ep.pool is not None
        return m.config(name, ep.spec, self.signature(ep), self.dp.limits.max_items, ep.pool.settings.ceil)

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        out = []
        for svc in self.registry.services.values():
            if not svc.state.enabled:
                continue
            for version, gen in svc.loaded.items():
                for ep in gen.endpoints.values():
                    if ep.spec.type != "prediction" or ep.pool is None or (ready_only and not ep.pool.ready):
                        continue
                    entry = {"name": m.model_name(svc.id, ep.spec.id), "version": version}
                    entry["state"] = "READY" if ep.pool.ready else "UNAVAILABLE"
                    entry["reason"] = ep.pool.not_ready_reason or ""
                    out.append(entry)
        return out

    def statistics(self, name: str = "", version: str = "", **who: Any) -> list[dict[str, Any]]:
        if name:
            svc, _, ep = self.find(name, version, **who)
            versions = [version] if version else [v for v, g in svc.loaded.items() if ep.spec.id in g.endpoints]
            keys = [(name, v) for v in versions]
        else:
            keys = [(e["name"], e["version"]) for e in self.index()]
        return [self._stats.get(k, _Stats()).to_json(*k) for k in keys]

    # ---- inference ---------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        version: str,
        inputs: list[Tensor],
        *,
        request_id: str = "",
        parameters: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        protocol: str,
        api_key: str | None = None,
        peer: str | None = None,
    ) -> InferResult:
        t0 = time.perf_counter_ns()
        svc, gen, ep = self.find(name, version, api_key=api_key, peer=peer)
        stats = self._stats.setdefault((name, gen.version), _Stats()) if version else None
        try:
            if outputs:
                known = [t["name"] for t in m.outputs_of(ep.spec)]
                unknown = [o for o in outputs if o not in known]
                if unknown:
                    raise errors.BadRequest(f"model {name!r} has no output {unknown[0]!r} (it has: {', '.join(known)})")
            body: dict[str, Any] = {"items": m.items(ep.spec, self.signature(ep), inputs)}
            body["explanations"] = {"enabled": False}  # OIP outputs have no place for them
            dispatch: dict[str, Any] = {}
            if version:
                dispatch["forcedGeneration"] = version
            key = (parameters or {}).get("dispatch_key")
            if key is not None:
                dispatch["dispatchKey"] = str(key)
            if dispatch:
                body["dispatch"] = dispatch
            out = await self.dp.call(
                "predict-multi", svc.id, ep.spec.id, body, protocol=protocol, api_key=api_key, peer=peer
            )
            m.refuse_ignored(out["results"])
            answered = out["apiContext"]["serviceGeneration"]
            # with a mapping of several generations, another one than `gen` may have answered
            other = svc.loaded.get(answered)
            ans = other.endpoints.get(ep.spec.id, ep) if other is not None else ep
            assert ans.codec is not None
            tensors = m.outputs(ans.spec, ans.codec.class_keys, out["results"])
        except Exception:
            if stats is not None:
                stats.add("fail", time.perf_counter_ns() - t0)
            raise
        if outputs:
            tensors = [t for t in tensors if t.name in outputs]
        stats = self._stats.setdefault((name, answered), _Stats())
        self._record(stats, len(out["results"]), out["timing"], time.perf_counter_ns() - t0)
        return InferResult(name, answered, request_id, tensors)

    @staticmethod
    def _record(stats: _Stats, rows: int, timing: dict[str, float], total_ns: int) -> None:
        stats.last_inference = int(time.time() * 1000)
        stats.inference_count += rows
        stats.execution_count += 1
        stats.add("success", total_ns)
        stats.add("queue", int(timing["wait"] * 1000))
        stats.add("compute_input", int(timing["preProcessing"] * 1000))
        stats.add("compute_infer", int(timing["prediction"] * 1000))
        stats.add("compute_output", int(timing["postProcessing"] * 1000))
