"""The admin gRPC service (`apinode.v1.Admin`): deploy, switch, tune, status.

Every call is authorised by :class:`~node.auth.AdminAuth` first. `PushPackage` streams the
upload into the data dir's `tmp/`, checking the declared size as it goes and the sha256 at
the end, before the admin plane sees it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson

from node import errors
from node._proto.apinode.v1 import admin_pb2 as apb
from node._proto.apinode.v1 import admin_pb2_grpc
from node.admin import AdminPlane
from node.auth import AdminAuth
from node.dataplane import DataPlane
from node.grpc.servicer import mapped
from node.keys import KeyManager

Ctx = grpc.aio.ServicerContext[Any, Any]


def _mapping_to_pb(m: dict[str, Any] | None) -> apb.Mapping:
    if not m:
        return apb.Mapping()
    return apb.Mapping(
        mode=m.get("mode", "random"),
        entries=[apb.MappingEntry(generation=e["generation"], proba=e["proba"]) for e in m.get("entries", [])],
    )


def _mapping_from_pb(m: apb.Mapping) -> dict[str, Any]:
    return {
        "mode": m.mode or "random",
        "entries": [{"generation": e.generation, "proba": e.proba} for e in m.entries],
    }


def _state_to_pb(s: dict[str, Any]) -> apb.ServiceState:
    return apb.ServiceState(
        service=s["service"],
        enabled=s["enabled"],
        mapping=_mapping_to_pb(s["mapping"]),
        generations=[apb.GenerationInfo(**g) for g in s["generations"]],
    )


def _tests_to_pb(tests: list[dict[str, Any]]) -> list[apb.TestQueryResult]:
    return [
        apb.TestQueryResult(
            endpoint=t["endpoint"],
            index=t["index"],
            ok=t["ok"],
            error=t.get("error", ""),
            latency_ms=t.get("latency_ms", 0.0),
            response_json=orjson.dumps(t["response"]).decode() if "response" in t else "",
        )
        for t in tests
    ]


def _tuning_to_pb(service: str, endpoint: str, t: dict[str, Any]) -> apb.Tuning:
    pool = {k: v for k, v in t["pool"].items() if v is not None}
    return apb.Tuning(service=service, endpoint=endpoint, pool=pool, source=t["source"])


def _endpoint_status_pb(service: str, generation: str, endpoint: str, st: dict[str, Any]) -> apb.EndpointStatus:
    """One endpoint's status. Lookup endpoints are served by the front process itself: they
    have no pool (no workers, queue or counters) and are ready once loaded."""
    workers = st.get("workers") or {}
    return apb.EndpointStatus(
        service=service,
        generation=generation,
        endpoint=endpoint,
        type=st["type"],
        ready=st.get("ready", True),
        not_ready_reason=st.get("notReadyReason") or "",
        workers_busy=workers.get("busy", 0),
        workers_idle=workers.get("idle", 0),
        workers_starting=workers.get("starting", 0),
        queue_depth=st.get("queueDepth", 0),
        served=st.get("served", 0),
        rejected=st.get("rejected", 0),
        timed_out=st.get("timed_out", 0),
        crashed=st.get("crashed", 0),
        restarts=st.get("restarts", 0),
    )


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self, admin: AdminPlane, dataplane: DataPlane, auth: AdminAuth, keys: KeyManager, *, max_package_bytes: int
    ) -> None:
        self.admin = admin
        self.dp = dataplane
        self.auth = auth
        self.max_package_bytes = max_package_bytes
        self.keys = keys

    def _authorise(self, context: Ctx) -> str | None:
        header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        what = "Admin/" + sys._getframe(1).f_code.co_name  # the RPC (every one calls this first)
        return self.auth.check(header if isinstance(header, str) else None, context.peer(), what)

    @mapped
    async def PushPackage(self, request_iterator: AsyncIterator[apb.PushChunk], context: Ctx) -> apb.PushResult:
        self._authorise(context)
        header: apb.PushHeader | None = None
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=".apz", dir=self.admin.storage.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request_iterator:
                    part = chunk.WhichOneof("part")
                    if part == "header":
                        if header is not None:
                            raise errors.BadRequest("PushPackage: a second header")
                        header = chunk.header
                        if header.size <= 0:
                            raise errors.BadRequest(
                                f"PushPackage: header.size must be the package's size in bytes, got {header.size}"
                            )
                        if header.size > self.max_package_bytes:
                            raise errors.PayloadTooLarge(
                                f"package of {header.size} bytes is over this node's limit of {self.max_package_bytes}"
                            )
                    elif part == "data":
                        if header is None:
                            raise errors.BadRequest("PushPackage: the first message must be the header")
                        size += len(chunk.data)
                        if size > header.size:
                            raise errors.BadRequest(f"PushPackage: more data than the declared {header.size} bytes")
                        h.update(chunk.data)
                        out.write(chunk.data)
            if header is None:
                raise errors.BadRequest("PushPackage: no header received")
            if size != header.size:
                raise errors.BadRequest(f"PushPackage: upload cut short: {size} of {header.size} bytes received")
            if header.sha256 and h.hexdigest() != header.sha256.lower():
                raise errors.BadRequest(
                    f"PushPackage: sha256 mismatch: received {h.hexdigest()}, declared {header.sha256}"
                )
            mapping = (
                _mapping_from_pb(header.mapping) if header.HasField("mapping") and header.mapping.entries else None
            )
            result = await self.admin.push(Path(tmp), activate=header.activate, mapping=mapping)
        finally:
            os.unlink(tmp)
        return apb.PushResult(
            service=result["service"],
            generation=result["generation"],
            new=result["new"],
            activated=result["activated"],
            tests=_tests_to_pb(result["tests"]),
            state=_state_to_pb(result["state"]),
        )

    @mapped
    async def ListServices(self, request: apb.ListServicesRequest, context: Ctx) -> apb.ListServicesResponse:
        self._authorise(context)
        return apb.ListServicesResponse(services=[_state_to_pb(s) for s in self.admin.list_services()])

    @mapped
    async def ListGenerations(self, request: apb.ServiceRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(self.admin.service_state(request.service))

    @mapped
    async def Activate(self, request: apb.GenerationRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.activate(request.service, request.generation))

    @mapped
    async def SetMapping(self, request: apb.SetMappingRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.set_mapping(request.service, _mapping_from_pb(request.mapping)))

    @mapped
    async def Rollback(self, request: apb.ServiceRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.rollback(request.service))

    @mapped
    async def Enable(self, request: apb.ServiceRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.set_enabled(request.service, True))

    @mapped
    async def Disable(self, request: apb.ServiceRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.set_enabled(request.service, False))

    @mapped
    async def DeleteGeneration(self, request: apb.GenerationRequest, context: Ctx) -> apb.ServiceState:
        self._authorise(context)
        return _state_to_pb(await self.admin.delete_generation(request.service, request.generation))

    @mapped
    async def DeleteService(self, request: apb.ServiceRequest, context: Ctx) -> apb.DeleteServiceResponse:
        self._authorise(context)
        await self.admin.delete_service(request.service)
        return apb.DeleteServiceResponse(service=request.service)

    @mapped
    async def GetTuning(self, request: apb.TuningRequest, context: Ctx) -> apb.Tuning:
        self._authorise(context)
        return _tuning_to_pb(
            request.service,
            request.endpoint,
            self.admin.get_tuning(request.service, request.endpoint),
        )

    @mapped
    async def SetTuning(self, request: apb.SetTuningRequest, context: Ctx) -> apb.Tuning:
        self._authorise(context)
        t = await self.admin.set_tuning(request.service, request.endpoint, dict(request.pool))
        return _tuning_to_pb(request.service, request.endpoint, t)

    @mapped
    async def Status(self, request: apb.StatusRequest, context: Ctx) -> apb.StatusResponse:
        self._authorise(context)
        doc = self.dp.status()
        eps = []
        for sid, svc in doc["services"].items():
            for version, endpoints in svc["generations"].items():
                for eid, st in endpoints.items():
                    eps.append(_endpoint_status_pb(sid, version, eid, st))
        return apb.StatusResponse(ready=doc["ready"], endpoints=eps, json=orjson.dumps(doc).decode())

    # ---- keys (node/keys.py) -------------------------------------------------------------
    @mapped
    async def ListAdminKeys(self, request: apb.ListKeysRequest, context: Ctx) -> apb.KeyList:
        self._authorise(context)
        return _keys_pb(self.keys.list_admin())

    @mapped
    async def AddAdminKey(self, request: apb.AddKeyRequest, context: Ctx) -> apb.KeyInfo:
        by = self._authorise(context)
        return _key_pb(self.keys.add_admin(_add_body(request), by, context.peer()))

    @mapped
    async def DeleteAdminKey(self, request: apb.DeleteKeyRequest, context: Ctx) -> apb.KeyList:
        by = self._authorise(context)
        if not request.id and not request.key:
            raise errors.BadRequest("give the admin key's id (or the key itself)")
        self.keys.delete_admin(request.id or None, request.key or None, by, context.peer())
        return _keys_pb(self.keys.list_admin())

    @mapped
    async def ListServiceKeys(self, request: apb.ListKeysRequest, context: Ctx) -> apb.KeyList:
        self._authorise(context)
        return _keys_pb(self.keys.list_service(request.service))

    @mapped
    async def AddServiceKey(self, request: apb.AddKeyRequest, context: Ctx) -> apb.KeyInfo:
        by = self._authorise(context)
        return _key_pb(self.keys.add_service(request.service, _add_body(request), by, context.peer()))

    @mapped
    async def RevokeServiceKey(self, request: apb.DeleteKeyRequest, context: Ctx) -> apb.KeyList:
        by = self._authorise(context)
        if not request.id:
            raise errors.BadRequest("give the id of the service key to revoke")
        self.keys.revoke_service(request.service, request.id, by, context.peer())
        return _keys_pb(self.keys.list_service(request.service))


def _add_body(request: apb.AddKeyRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "label": request.label,
        "description": request.description,
        "createdBy": request.created_by,
    }


def _key_pb(k: dict[str, Any]) -> apb.KeyInfo:
    return apb.KeyInfo(
        id=k.get("id", ""),
        label=k.get("label", ""),
        description=k.get("description", ""),
        created_by=k.get("createdBy", ""),
        created_on=k.get("createdOn", ""),
        source=k.get("source", ""),
        key=k.get("key", ""),
        service=k.get("service", ""),
    )


def _keys_pb(keys: list[dict[str, Any]]) -> apb.KeyList:
    return apb.KeyList(keys=[_key_pb(k) for k in keys])
