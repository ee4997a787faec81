"""The composition root: settings -> supervisor -> registry -> data plane -> both servers.

`Node.start()` builds and starts everything on the running (uv)loop; on SIGTERM,
`Node.drain()` turns readiness off while serving on (`--drain-seconds`), then `Node.stop()`
stops everything in reverse order, letting in-flight requests finish within the grace period.

Every part is built here and given what it uses in its constructor (the query log to the
registry, data plane and metrics; one key manager to both admin transports); none is patched
onto another afterwards. `serve` runs a node until told to stop: by SIGTERM/SIGINT for the
command line, or by an event when the loop is not the main thread's (tests/inproc.py), where
no signal handler may be installed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from node._proto.apinode.v1 import admin_pb2, admin_pb2_grpc, apinode_pb2, apinode_pb2_grpc
from node._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from node.admin import AdminPlane
from node.auth import AdminAuth
from node.dataplane import DataPlane, Limits
from node.fds import connection_cap, raise_nofile
from node.grpc.admin import AdminServicer
from node.grpc.health import HealthServicer
from node.grpc.servicer import ApiNodeServicer
from node.grpc.undecodable import register_servicers
from node.health import not_alive
from node.http.admin import add_admin_routes
from node.http.app import DSS_HEADERS, build_app
from node.http.codec import DataikuTestQueries
from node.http.guard import ConnectionGuard, body_guard
from node.http.listen import Listener
from node.http.openapi import add_openapi_routes
from node.http.quiet import quiet_malformed_requests
from node.http.refuse import raw_refuser
from node.keys import KeyManager
from node.metrics import Metrics
from node.oip.grpc import InferenceServicer
from node.oip.http import add_oip_routes
from node.oip.plane import OipPlane
from node.querylog import QueryLog
from node.registry import Registry
from node.repository import RepositoryCollector, RepositorySync
from node.settings import NodeSettings
from node.storage import Storage
from node.supervisor import cpus
from node.supervisor.supervisor import Supervisor

log = logging.getLogger("node")
GRPC_MAX_STREAMS = 1000  # concurrent calls on one gRPC connection (the client queues the rest)
GRPC_MAX_AGE_S = 2 * 3600
GRPC_AGE_GRACE_S = 3600
# On SIGTERM, how long kept-alive HTTP connections get to send one more request (answered,
# with `Connection: close`) before the idle ones are closed.
HTTP_DRAIN_S = 2.0
GRPC_SETTLE_S = 0.5


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(
            max_workers=settings.max_workers,
            cpu_budget=cpus.detect() if settings.cpu_budget == -1 else cpus.given(settings.cpu_budget),
            shed_lag_ms=settings.shed_lag_ms,
            queue_target_ms=settings.queue_target_ms,
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
        self.registry = Registry(
            self.storage,
            self.supervisor,
            onnx_threads=settings.onnx_threads,
            connections_file=settings.connections_file,
            querylog=self.querylog,
            allow_empty=settings.allow_empty,
        )
        limits = Limits(
            max_items=settings.max_items,
            max_json_depth=settings.max_json_depth,
            max_string_chars=settings.max_string_chars,
        )
        self.metrics = Metrics(self.supervisor, querylog=self.querylog)
        self.dataplane = DataPlane(self.registry, limits, metrics=self.metrics, querylog=self.querylog)
        self.oip = OipPlane(self.dataplane, settings.data_dir)
        self.admin = AdminPlane(
            self.registry, self.dataplane, self.storage, DataikuTestQueries(), keep_warm=settings.keep_warm
        )
        self.auth = AdminAuth(settings.admin_keys, settings.data_dir, open_loopback=settings.admin_open_loopback)
        self.keys = KeyManager(self.auth, self.registry.keys, self.storage.root, self.registry.services)
        self.repository: RepositorySync | None = None
        if settings.repository is not None:
            self.repository = RepositorySync(self.admin, settings.repository, settings.poll_seconds)
            self.registry.gates.append(self.repository.not_ready)
            self.registry.status_sections["repository"] = self.repository.status
            self.metrics.registry.register(RepositoryCollector(self.repository))
        self.http_port = 0
        self.grpc_port = 0
        self.max_connections = settings.max_connections  # per server, once sized to the descriptor limit
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self.http_guard: ConnectionGuard | None = None
        self._draining = False
        self._grpc: grpc.aio.Server | None = None
        self._health = HealthServicer(self._serving)
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.max_connections = connection_cap(s.max_connections, raise_nofile())
        await self.supervisor.start()
        await self.registry.start()
        for result in await self.admin.seed([Path(p) for p in s.packages]):  # services without state only
            log.info("serving %s %s from the command line", result["service"], result["generation"])
        app = build_app(self.dataplane, s.data_dir, client_max_size=s.max_body_bytes)
        quiet_malformed_requests()
        add_openapi_routes(app)
        add_admin_routes(app, self.admin, self.auth, self.keys)
        add_oip_routes(app, self.oip)
        app.middlewares.append(body_guard(s.max_body_bytes, s.body_timeout))
        app.on_response_prepare.append(self._close_when_draining)
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=s.shutdown_grace,
            keepalive_timeout=s.idle_timeout,  # also armed when a connection opens: a silent one is closed
        )
        await self._runner.setup()
        assert self._runner.server is not None
        # Our own listener (not a TCPSite) so that each connection goes through the guard.
        refuse = raw_refuser(self.dataplane, DSS_HEADERS)
        self.http_guard = ConnectionGuard(
            self._runner.server,
            max_connections=self.max_connections,
            header_timeout=s.header_timeout,
            # While draining, every answer says `Connection: close` (_close_when_draining): aiohttp's.
            refuse=lambda head: None if self._draining else refuse(head),
        )
        self.registry.status_sections["http"] = self.http_guard.status
        tls = _http_tls(s)
        # Our own accept loop (node.http.listen: libuv accepts one connection per iteration).
        self._listener = Listener.open(
            s.host,
            s.http_port,
            backlog=1024,
            factory=self.http_guard,
            tls=tls,
            # The guard sees a TLS connection only once its handshake is done: until then the
            # header timeout bounds it (asyncio's default would hold it for 60 s).
            tls_handshake_timeout=s.header_timeout if tls is not None else None,
        )
        self.http_port = self._listener.sockets[0].getsockname()[1]

        opts = [
            ("grpc.max_receive_message_length", s.max_grpc_message_bytes),
            ("grpc.max_send_message_length", s.max_grpc_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_concurrent_streams", GRPC_MAX_STREAMS),
            ("grpc.server_handshake_timeout_ms", int(s.header_timeout * 1000)),  # connection preface
            ("grpc.max_connection_idle_ms", int(s.idle_timeout * 1000)),  # then GOAWAY
            ("grpc.max_connection_age_ms", GRPC_MAX_AGE_S * 1000),  # clients reconnect (and rebalance)
            ("grpc.max_connection_age_grace_ms", GRPC_AGE_GRACE_S * 1000),  # calls in flight then finish
            # Keepalive: ping a peer in a call every minute, drop it after 20 s of silence; a client
            # pinging more often than every 30 s, or with no call open, gets GOAWAY after 2 strikes.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
            ("grpc.http2.max_ping_strikes", 2),
        ]
        self._grpc = grpc.aio.server(options=opts)
        services = (
            apinode_pb2.DESCRIPTOR.services_by_name["ApiNode"],
            admin_pb2.DESCRIPTOR.services_by_name["Admin"],
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            health_pb2.DESCRIPTOR.services_by_name["Health"],
            reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
        )
        register_servicers(  # every servicer, so that each refuses undecodable messages
            self._grpc,
            [
                (apinode_pb2_grpc.add_ApiNodeServicer_to_server, ApiNodeServicer(self.dataplane)),
                (
                    admin_pb2_grpc.add_AdminServicer_to_server,
                    AdminServicer(
                        self.admin, self.dataplane, self.auth, self.keys, max_package_bytes=s.max_package_bytes
                    ),
                ),
                (grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, InferenceServicer(self.oip)),
                (health_pb2_grpc.add_HealthServicer_to_server, self._health),
                (reflection_pb2_grpc.add_ServerReflectionServicer_to_server, _reflection(services)),
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
        self._health_task = asyncio.create_task(self._health.run())
        if self.repository is not None:  # syncs in the background: /ready says 503 until done
            self.repository.start()

    def _serving(self) -> bool:
        """What gRPC health reports: alive (HTTP /isAlive/) and ready (HTTP /ready)."""
        return not_alive(self.settings.data_dir) is None and self.dataplane.readiness()[0]

    async def drain(self, seconds: float, cut_short: asyncio.Event | None = None) -> None:
        """Readiness off at once (HTTP `/ready`, OIP, gRPC health) while everything keeps
        serving and accepting for `seconds`, so that a load balancer (Kubernetes removing the
        pod from its Service's endpoints) stops sending new connections before `stop` closes
        the listeners. Kept-alive HTTP answers say `Connection: close` from now on, so their
        clients reconnect through the balancer. `cut_short` set ends the wait early."""
        self.dataplane.draining = True
        self._draining = True
        await self._health.refresh()
        if seconds <= 0:
            return
        log.info("draining: not ready, serving on for %g s", seconds)
        try:
            await asyncio.wait_for((cut_short or asyncio.Event()).wait(), seconds)
        except TimeoutError:
            pass
        else:
            log.info("drain cut short by a second signal")

    async def _close_when_draining(self, request: web.Request, response: web.StreamResponse) -> None:
        if self._draining:  # the client learns from this answer that the connection ends here
            response.force_close()
            response.headers["Connection"] = "close"  # aiohttp wrote its own before this hook

    async def _drain_http(self, seconds: float) -> None:
        """Stops accepting, then gives kept-alive connections `seconds` to send one more
        request: it is answered with `Connection: close`, so a client never sends on a
        connection the node is closing. Connections then idle are closed by the cleanup."""
        if self._listener is not None:
            self._listener.close()
        self._draining = True
        deadline = asyncio.get_running_loop().time() + seconds
        # Every connection, not only the idle ones: an answer prepared before the signal said
        # keep-alive, so its client may send again on it.
        while self.http_guard is not None and self.http_guard.connections:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.02)
        if self._runner is not None:
            await self._runner.cleanup()  # closes idle connections, lets requests in flight finish

    async def stop(self) -> None:
        """Stops listening, lets in-flight and queued requests finish (up to the grace
        period), then stops the workers."""
        grace = self.settings.shutdown_grace
        if self.repository is not None:
            await self.repository.stop()
        if self._health_task is not None:
            self._health_task.cancel()
        await self._health.enter_graceful_shutdown()
        http = asyncio.create_task(self._drain_http(min(HTTP_DRAIN_S, grace)))  # stops accepting at once
        stops: list[Awaitable[None]] = [http]
        if self._grpc is not None:
            # gRPC hands a call to the server only when its event loop asks for the next one; calls
            # that arrived while the loop was busy wait in gRPC's queue, and gRPC cancels those at
            # stop(). Serving on a little first lets every call that reached us be taken.
            await asyncio.sleep(min(GRPC_SETTLE_S, grace))
            stops.append(self._grpc.stop(grace))  # GOAWAY: clients open no new call on their connection
        results = await asyncio.gather(*stops, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("error while stopping a server: %r", r)
        await self.admin.wait_retired()
        await self.registry.close()
        await self.supervisor.close()
        if self.querylog is not None:
            await asyncio.to_thread(self.querylog.close)


def _reflection(services: Sequence[ServiceDescriptor]) -> object:
    """Server reflection of `services`, from a pool of their files alone: the OIP's are not in
    protobuf's default pool (node/_proto/inference/_pool.py says why)."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(f: FileDescriptor) -> None:
        if f.name not in added:
            added.add(f.name)
            for dependency in f.dependencies:
                add(dependency)
            proto = descriptor_pb2.FileDescriptorProto()
            f.CopyToProto(proto)
            pool.Add(proto)

    for service in services:
        add(service.file)
    names = [service.full_name for service in services]
    # `reflection.aio` is public (in the module's __all__) but missing from grpc-stubs.
    return reflection.aio.ReflectionServicer(names, pool=pool)  # type: ignore[attr-defined]


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


def freeze_heap() -> None:
    """Moves what start-up allocated (modules, the apps, the routes, loaded packages: some 65k
    objects in the front) out of the garbage collector's reach. A full collection walks every
    tracked object; the front's took 60-100 ms under load, a stall for every request in
    flight, every 30 s or so at 800 req/s. After the freeze a full collection walks only what
    was allocated since (gc.freeze; objects frozen are never collected, so collect first)."""
    gc.collect()
    gc.freeze()


async def serve(
    settings: NodeSettings,
    *,
    on_started: Sequence[Callable[[Node], object]] = (),
    stop: asyncio.Event | None = None,
    hurry: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Runs a node until `stop` is set: by SIGTERM or SIGINT when `handle_signals` (the
    command line), or by its owner (tests run nodes on event loops in other threads, where
    no signal handler may be installed). `hurry` set (a second signal) skips what is left
    of the drain, not the grace."""
    node = Node(settings)
    stop = stop or asyncio.Event()
    hurry = hurry or asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
    try:
        await node.start()
    except BaseException:
        await node.stop()
        raise
    if handle_signals:  # the command line: this process is the node's alone
        freeze_heap()
    for callback in on_started:
        callback(node)
    await stop.wait()
    await node.drain(settings.drain_seconds, hurry)
    log.info("stopping")
    await node.stop()
