"""The composition root: settings -> supervisor -> registry -> data plane -> both servers.

`Node.start()` builds and starts everything on the running (uv)loop; `Node.stop()` stops
it in reverse order, letting in-flight requests finish within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc, apinode_pb2, apinode_pb2_grpc
from node._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from node.admin import AdminPlane
from node.auth import AdminAuth
from node.dataplane import DataPlane, Limits
from node.grpc.admin import AdminServicer
from node.grpc.servicer import ApiNodeServicer
from node.grpc.undecodable import register_servicers
from node.http.admin import add_admin_routes
from node.http.app import build_app
from node.oip.grpc import InferenceServicer
from node.oip.http import add_oip_routes
from node.oip.plane import OipPlane
from node.querylog import QueryLog
from node.registry import Registry
from node.repository import RepositoryCollector, RepositorySync
from node.settings import NodeSettings
from node.storage import Storage
from node.supervisor.supervisor import Supervisor

log = logging.getLogger("node")


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(
            max_workers=settings.max_workers,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            worker_nice=settings.worker_nice,
        )
        self.storage = Storage(settings.data_dir)
        self.querylog = (
            QueryLog(settings.query_log_dir, max_bytes=int(settings.query_log_max_mb * 1024**2))
            if settings.query_log_dir is not None
            else None
        )
        self.supervisor.querylog = self.querylog  # type: ignore[attr-defined]  # for the dropped-lines metric
        self.registry = Registry(
            self.storage,
            self.supervisor,
            onnx_threads=settings.onnx_threads,
            connections_file=settings.connections_file,
        )
        self.registry.querylog = self.querylog
        limits = Limits(
            max_items=settings.max_items,
            max_json_depth=settings.max_json_depth,
            max_string_chars=settings.max_string_chars,
        )
        self.dataplane = DataPlane(self.registry, limits, querylog=self.querylog)
        self.oip = OipPlane(self.dataplane)
        self.admin = AdminPlane(self.registry, self.dataplane, self.storage)
        self.auth = AdminAuth(settings.admin_keys, settings.data_dir)
        self.registry.allow_empty = settings.allow_empty
        self.repository: RepositorySync | None = None
        if settings.repository is not None:
            self.repository = RepositorySync(self.admin, settings.repository, settings.poll_seconds)
            self.registry.gates.append(self.repository.not_ready)
            self.registry.status_sections["repository"] = self.repository.status
            self.dataplane.metrics.registry.register(RepositoryCollector(self.repository))
        self.http_port = 0
        self.grpc_port = 0
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        await self.supervisor.start()
        await self.registry.start()
        for result in await self.admin.seed([Path(p) for p in s.packages]):  # services without state only
            log.info("serving %s %s from the command line", result["service"], result["generation"])
        app = build_app(self.dataplane, s.data_dir, client_max_size=s.max_body_bytes)
        add_admin_routes(app, self.admin, self.auth)
        add_oip_routes(app, self.oip)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=s.shutdown_grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.http_port, reuse_address=True, ssl_context=_http_tls(s))
        await site.start()
        server = site._server
        assert server is not None
        self.http_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

        opts = [
            ("grpc.max_receive_message_length", s.max_grpc_message_bytes),
            ("grpc.max_send_message_length", s.max_grpc_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.aio.server(options=opts)
        names = (
            apinode_pb2.DESCRIPTOR.services_by_name["ApiNode"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        register_servicers(  # every servicer, so that each refuses undecodable messages
            self._grpc,
            [
                (apinode_pb2_grpc.add_ApiNodeServicer_to_server, ApiNodeServicer(self.dataplane)),
                (
                    admin_pb2_grpc.add_AdminServicer_to_server,
                    AdminServicer(self.admin, self.dataplane, self.auth, max_package_bytes=s.max_package_bytes),
                ),
                (grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, InferenceServicer(self.oip)),
                (health_pb2_grpc.add_HealthServicer_to_server, self._health),
                (reflection_pb2_grpc.add_ServerReflectionServicer_to_server, ReflectionServicer(names)),
            ],
        )
        creds = _grpc_tls(s)
        address = f"{s.host}:{s.grpc_port}"
        self.grpc_port = (
            self._grpc.add_secure_port(address, creds) if creds is not None else self._grpc.add_insecure_port(address)
        )
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {s.host}:{s.grpc_port}")
        await self._grpc.start()
        await self._update_health()
        self._health_task = asyncio.create_task(self._health_loop())
        if self.repository is not None:  # syncs in the background: /ready says 503 until done
            self.repository.start()

    async def _update_health(self) -> None:
        ok, _ = self.dataplane.readiness()
        serving = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set("", serving)
        await self._health.set("apinode.v1.ApiNode", serving)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._update_health()

    async def stop(self) -> None:
        """Stops listening, lets in-flight and queued requests finish (up to the grace
        period), then stops the workers."""
        grace = self.settings.shutdown_grace
        if self.repository is not None:
            await self.repository.stop()
        if self._health_task is not None:
            self._health_task.cancel()
        await self._health.enter_graceful_shutdown()
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(grace))
        if self._runner is not None:
            stops.append(self._runner.cleanup())
        results = await asyncio.gather(*stops, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("error while stopping a server: %r", r)
        await self.admin.wait_retired()
        await self.registry.close()
        await self.supervisor.close()
        if self.querylog is not None:
            await asyncio.to_thread(self.querylog.close)


def _http_tls(s: NodeSettings) -> ssl.SSLContext | None:
    if s.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(s.tls_cert, s.tls_key)
    if s.tls_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(s.tls_client_ca)
    return ctx


def _grpc_tls(s: NodeSettings) -> grpc.ServerCredentials | None:
    if s.tls_cert is None or s.tls_key is None:
        return None
    ca = s.tls_client_ca.read_bytes() if s.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())], root_certificates=ca, require_client_auth=ca is not None
    )


async def serve(settings: NodeSettings, *, on_started: list[object] | None = None) -> None:
    """Runs a node until SIGTERM or SIGINT."""
    node = Node(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    for callback in on_started or []:
        callback(node)  # type: ignore[operator]
    await stop.wait()
    log.info("stopping")
    await node.stop()
