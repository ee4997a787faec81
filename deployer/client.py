"""`AdminClient`: the node's admin gRPC API as typed Python methods.

    with AdminClient("127.0.0.1:12001", admin_key, tls=Tls(ca=Path("ca.crt"))) as node:
        result = node.push(Path("fraud.apz"), activate=True)
        node.set_mapping("fraud", Mapping.parse("v1=0.9,v2=0.1"))

Every failure is a :class:`~deployer.errors.DeployError` with one readable line (the node's
own details included) and the exit code it deserves; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deployer.errors import DeployError, from_rpc_error
from deployer.models import Mapping, NodeStatus, PushResult, ServiceState, Tuning
from deployer.packagefile import CHUNK, LocalPackage, open_package
from deployer.transport import Tls, channel, wait_connected
from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (bytes sent, total bytes)
DEFAULT_TARGET = "127.0.0.1:12001"


class AdminClient:
    """A client of one node's admin API. Thread-safe; close it (or use `with`)."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        admin_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        tls: Tls | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.tls = tls
        self._channel = channel(target, tls)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {admin_key}"),) if admin_key else ()
        self._connected = False

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Waits for the connection (Unreachable, exit 3, when none comes)."""
        if not self._connected:
            wait_connected(self._channel, self.target, self.connect_timeout, self.tls)
            self._connected = True

    def _call(self, what: str, method: Callable[..., T], request: Any) -> T:
        self.connect()
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self.target, what) from None

    def rpc(self, what: str, method: str, request: Any) -> Any:
        """Calls the Admin RPC named `method` (errors as for every call: DeployError)."""
        return self._call(what, getattr(self._stub, method), request)

    # ---- deploy ------------------------------------------------------------------------
    def push(
        self,
        package: Path | LocalPackage,
        *,
        activate: bool = False,
        mapping: Mapping | None = None,
        sha256: str | None = None,
        on_progress: Progress | None = None,
    ) -> PushResult:
        """Uploads a package in 1 MiB chunks after a header with its size and sha256.

        `sha256`: the digest the node must find (e.g. the one the build recorded); by
        default the file's own. With `activate` or `mapping` the node loads the new
        generation, plays its test queries and only then lets it serve.
        """
        pkg = package if isinstance(package, LocalPackage) else open_package(package)
        if activate and mapping is not None:
            raise DeployError("push: give either activate or a mapping, not both")
        header = admin_pb2.PushHeader(
            size=pkg.size,
            sha256=sha256 or pkg.sha256(),
            filename=pkg.path.name,
            activate=activate,
            mapping=mapping.to_pb() if mapping is not None else None,
        )
        self.connect()
        chunks = _chunks(pkg.path, header, on_progress)
        what = f"the push of {pkg.path.name}"
        try:
            reply = self._stub.PushPackage(chunks, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:  # a read error in `chunks` cancels the call: same path
            raise from_rpc_error(exc, self.target, what) from None
        return PushResult.from_pb(reply)

    def activate(self, service: str, generation: str) -> ServiceState:
        req = admin_pb2.GenerationRequest(service=service, generation=generation)
        return ServiceState.from_pb(self._call(f"activate {service} {generation}", self._stub.Activate, req))

    def set_mapping(self, service: str, mapping: Mapping) -> ServiceState:
        req = admin_pb2.SetMappingRequest(service=service, mapping=mapping.to_pb())
        return ServiceState.from_pb(self._call(f"mapping of {service}", self._stub.SetMapping, req))

    def rollback(self, service: str) -> ServiceState:
        req = admin_pb2.ServiceRequest(service=service)
        return ServiceState.from_pb(self._call(f"rollback of {service}", self._stub.Rollback, req))

    def enable(self, service: str) -> ServiceState:
        req = admin_pb2.ServiceRequest(service=service)
        return ServiceState.from_pb(self._call(f"enable {service}", self._stub.Enable, req))

    def disable(self, service: str) -> ServiceState:
        req = admin_pb2.ServiceRequest(service=service)
        return ServiceState.from_pb(self._call(f"disable {service}", self._stub.Disable, req))

    def delete_generation(self, service: str, generation: str) -> ServiceState:
        req = admin_pb2.GenerationRequest(service=service, generation=generation)
        what = f"delete {service} {generation}"
        return ServiceState.from_pb(self._call(what, self._stub.DeleteGeneration, req))

    def delete_service(self, service: str) -> None:
        req = admin_pb2.ServiceRequest(service=service)
        self._call(f"delete {service}", self._stub.DeleteService, req)

    # ---- views and tuning --------------------------------------------------------------
    def list_services(self) -> list[ServiceState]:
        reply = self._call("list", self._stub.ListServices, admin_pb2.ListServicesRequest())
        return [ServiceState.from_pb(s) for s in reply.services]

    def service(self, service: str) -> ServiceState:
        req = admin_pb2.ServiceRequest(service=service)
        return ServiceState.from_pb(self._call(f"list {service}", self._stub.ListGenerations, req))

    def find_service(self, service: str) -> ServiceState | None:
        """The service's state, or None when the node does not have it."""
        try:
            return self.service(service)
        except DeployError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise

    def get_tuning(self, service: str, endpoint: str) -> Tuning:
        req = admin_pb2.TuningRequest(service=service, endpoint=endpoint)
        return Tuning.from_pb(self._call(f"tuning of {service}/{endpoint}", self._stub.GetTuning, req))

    def set_tuning(self, service: str, endpoint: str, pool: dict[str, int]) -> Tuning:
        req = admin_pb2.SetTuningRequest(service=service, endpoint=endpoint, pool=pool)
        return Tuning.from_pb(self._call(f"tuning of {service}/{endpoint}", self._stub.SetTuning, req))

    def status(self) -> NodeStatus:
        return NodeStatus.from_pb(self._call("status", self._stub.Status, admin_pb2.StatusRequest()))

    def health(self, service: str = "") -> str:
        """The standard gRPC health check: "SERVING", "NOT_SERVING", ..."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        req = health_pb2.HealthCheckRequest(service=service)
        reply = self._call("health check", stub.Check, req)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_serving(self, timeout: float = 30.0, service: str = "") -> str:
        """Polls the health check until SERVING; returns the last status seen."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.health(service)
            if status == "SERVING" or time.monotonic() >= deadline:
                return status
            time.sleep(0.2)


def _chunks(path: Path, header: admin_pb2.PushHeader, on_progress: Progress | None) -> Iterator[admin_pb2.PushChunk]:
    yield admin_pb2.PushChunk(header=header)
    sent = 0
    if on_progress is not None:
        on_progress(0, header.size)
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(CHUNK), b""):
            yield admin_pb2.PushChunk(data=data)
            sent += len(data)
            if on_progress is not None:
                on_progress(sent, header.size)
