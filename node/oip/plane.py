"""The Open Inference Protocol's operations, in plain Python, for its HTTP and gRPC routes.

A model is a prediction endpoint of an active service (:mod:`node.oip.model`); its versions
are the service's loaded generations, and the unversioned model follows the service's
mapping. `infer` resolves the model once (a version pins its generation, else the mapping
picks one, by hash of the `dispatch_key` parameter for a hash mapping), checks the caller's
key once, and hands the input tensors as columns to :meth:`DataPlane.predict_rows` (as items
when the endpoint enriches), so the pool, batching, enrichment, limits, metrics and query
log are those of the Dataiku API. Every call needs the service's API key when it has some
(metadata included: it describes the model).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apz.specs import EndpointSpec
from node import errors, ops
from node.dataplane import DataPlane, Resolved
from node.health import not_alive
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
    """Triton's cumulative statistics of one model version, for the OIP calls it answered:
    every success counts once in each duration, so their count is `execution_count`."""

    last_inference: int = 0  # ms since the epoch
    inference_count: int = 0  # rows
    execution_count: int = 0  # requests answered
    fail_count: int = 0
    fail_ns: int = 0
    success_ns: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    def success(self, rows: int, timing: ops.Timing, total_ns: int) -> None:
        self.last_inference = int(time.time() * 1000)
        self.inference_count += rows
        self.execution_count += 1
        self.success_ns += total_ns
        self.queue_ns += int((timing.wait or 0.0) * 1000)
        self.compute_input_ns += int((timing.pre_processing or 0.0) * 1000)
        self.compute_infer_ns += int((timing.prediction or 0.0) * 1000)
        self.compute_output_ns += int((timing.post_processing or 0.0) * 1000)

    def fail(self, ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += ns

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        n = self.execution_count
        durations = {
            "success": (n, self.success_ns),
            "fail": (self.fail_count, self.fail_ns),
            "queue": (n, self.queue_ns),
            "compute_input": (n, self.compute_input_ns),
            "compute_infer": (n, self.compute_infer_ns),
            "compute_output": (n, self.compute_output_ns),
        }
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in durations.items()},
            "batch_stats": [],
        }


class OipPlane:
    def __init__(self, dataplane: DataPlane, data_dir: Path) -> None:
        self.dp = dataplane
        self.data_dir = data_dir
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

    def live(self) -> bool:
        """As HTTP /isAlive/ and gRPC health decide it (node.health)."""
        return not_alive(self.data_dir) is None

    # ---- models ------------------------------------------------------------------------
    def _service(self, name: str) -> tuple[Service, str]:
        service, endpoint = m.split_name(name)
        svc = self.registry.services.get(service)
        if svc is None or not svc.state.enabled:
            raise errors.NotFound(f"unknown model {name!r}: service {service!r} is not served by this node")
        return svc, endpoint

    def find(
        self,
        name: str,
        version: str = "",
        caller: ops.Caller | None = None,
        *,
        pick: bool = False,
        dispatch_key: str | None = None,
    ) -> tuple[Service, Resolved]:
        """The model's generation (the version asked for; else, to infer, the mapping's
        pick, and to describe the model, the active one) and endpoint; checks the caller's
        API key."""
        svc, endpoint = self._service(name)
        caller = caller or ops.Caller()
        key_id = self.dp.keys.check(svc.id, caller.api_key, caller.peer)
        gen = self._generation(svc, name, version, pick, dispatch_key)
        ep = gen.endpoints.get(endpoint)
        if ep is None or ep.spec.type != "prediction" or ep.pool is None:
            raise errors.NotFound(f"unknown model {name!r}: service {svc.id!r} has no prediction endpoint {endpoint!r}")
        return svc, Resolved(gen, ep, key_id)

    def _generation(self, svc: Service, name: str, version: str, pick: bool, dispatch_key: str | None) -> Generation:
        if version:
            gen = svc.loaded.get(version)
            if gen is None:
                raise errors.NotFound(f"model {name!r} has no version {version!r} (it has: {', '.join(svc.loaded)})")
            return gen
        picked: str | None = None
        pick_error: errors.ApiNodeError | None = None
        if pick:  # an inference: the mapping picks, as for any call
            try:
                picked = svc.pick({"dispatchKey": dispatch_key} if dispatch_key is not None else None)
            except errors.ApiNodeError as exc:
                pick_error = exc
            gen = svc.loaded.get(picked) if picked is not None else None
            if gen is not None:  # picked among the mapping's versions, and loaded: an active version
                return gen
        # what is wrong (or, to describe the model, which version is active), in this order
        for active in self.registry.serving(svc):
            if active in svc.loaded:
                break
        else:
            raise errors.NotFound(f"model {name!r} has no active version")
        if isinstance(pick_error, errors.DispatchKeyMissing):
            raise errors.DispatchKeyMissing(svc.id, 'the request parameter "dispatch_key"') from None
        if pick_error is not None:
            raise pick_error
        if picked is not None:
            active = picked
        gen = svc.loaded.get(active)
        if gen is None:
            raise errors.NotReady(f"generation {active!r} of service {svc.id!r} is not loaded")
        return gen

    def model_metadata(self, name: str, version: str = "", caller: ops.Caller | None = None) -> dict[str, Any]:
        svc, found = self.find(name, version, caller)
        ep = found.ep
        versions = [v for v, g in svc.loaded.items() if ep.spec.id in g.endpoints]
        return m.metadata(name, versions, ep.spec, self.signature(ep))

    def model_ready(self, name: str, version: str = "", caller: ops.Caller | None = None) -> bool:
        ep = self.find(name, version, caller)[1].ep
        assert ep.pool is not None
        return ep.pool.ready

    def model_config(self, name: str, version: str = "", caller: ops.Caller | None = None) -> dict[str, Any]:
        ep = self.find(name, version, caller)[1].ep
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

    def statistics(self, name: str = "", version: str = "", caller: ops.Caller | None = None) -> list[dict[str, Any]]:
        if name:
            svc, found = self.find(name, version, caller)
            ep = found.ep
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
        caller: ops.Caller,
        *,
        request_id: str = "",
        parameters: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
    ) -> InferResult:
        t0 = time.perf_counter_ns()
        key = (parameters or {}).get("dispatch_key")
        svc, found = self.find(name, version, caller, pick=True, dispatch_key=None if key is None else str(key))
        gen, ep = found.gen, found.ep
        stats = self._stats_of(name, gen.version) if version else None
        try:
            if outputs:
                known = [t["name"] for t in m.outputs_of(ep.spec)]
                unknown = [o for o in outputs if o not in known]
                if unknown:
                    raise errors.BadRequest(f"model {name!r} has no output {unknown[0]!r} (it has: {', '.join(known)})")
            sig = self.signature(ep)
            if ep.enricher is None:
                req = ops.PredictRowsRequest(svc.id, ep.spec.id, rows=m.columns(ep.spec, sig, inputs))
            else:  # enrichment completes one feature mapping per row
                req = ops.PredictRowsRequest(svc.id, ep.spec.id, items=m.items(ep.spec, sig, inputs))
            out = await self.dp.predict_rows(req, caller, found)
            if ep.enricher is not None:  # only enrichment ignores rows
                m.refuse_ignored(out.predictions)
            assert ep.codec is not None
            tensors = m.outputs(ep.spec, sig, ep.codec.class_keys, out.predictions)
        except Exception:
            if stats is not None:
                stats.fail(time.perf_counter_ns() - t0)
            raise
        if outputs:
            tensors = [t for t in tensors if t.name in outputs]
        if stats is None:
            stats = self._stats_of(name, gen.version)
        stats.success(len(out.predictions), out.timing, time.perf_counter_ns() - t0)
        return InferResult(name, gen.version, request_id, tensors)

    def _stats_of(self, name: str, version: str) -> _Stats:
        stats = self._stats.get((name, version))
        if stats is None:
            stats = self._stats[(name, version)] = _Stats()
        return stats
