"""Settings of a node, from the command line (`apinode serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class NodeSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    http_port: int = 12000
    grpc_port: int = 12001
    max_workers: int | None = None  # node-wide cap on worker processes (None: no cap)
    shed_lag_ms: int = 200  # event-loop lag past which pools that queue refuse new requests (0: off)
    queue_target_ms: int = 10  # a prediction queue whose wait stays above this for 100 ms is standing (0: off)
    cpu_budget: int | None = -1  # CPUs prediction workers may keep busy (-1: detected, None: no budget)
    onnx_threads: int = 1  # intra-op threads per ONNX session: N workers use N cores
    worker_nice: int = 10  # added to workers' niceness: on a busy CPU the front (I/O, queues, 503s) runs first
    ping_interval: float = 1.0
    ping_timeout: float = 10.0
    keep_warm: float = 600.0  # seconds a generation switched away from stays loaded for rollback (0: none)
    shutdown_grace: float = 20.0  # seconds in-flight requests get on SIGTERM
    drain_seconds: float = 0.0  # on SIGTERM, seconds of serving on while not ready, before shutdown
    header_timeout: float = 10.0  # an HTTP request head must be complete this long after its first byte
    body_timeout: float = 60.0  # an HTTP request body must be complete this long after its head (408)
    idle_timeout: float = 75.0  # a connection (HTTP keep-alive or gRPC) with no request this long is closed
    max_connections: int = 4096  # per server (HTTP, gRPC); lowered at start to fit the descriptor limit
    max_body_bytes: int = 32 * 1024 * 1024  # an HTTP request body (413 PAYLOAD_TOO_LARGE)
    max_grpc_message_bytes: int = 32 * 1024 * 1024  # a gRPC message (RESOURCE_EXHAUSTED, from gRPC itself)
    max_items: int = 10_000  # items of one predict-multi call (413 PAYLOAD_TOO_LARGE)
    max_json_depth: int = 64  # nesting of a JSON body (400 BAD_REQUEST)
    max_string_chars: int = 65_536  # a string feature value, or any string of a JSON body (400 BAD_REQUEST)
    max_package_bytes: int = 2 * 1024**3
    admin_keys: list[str] = field(default_factory=list)
    admin_open_loopback: bool = False  # key-less admin calls from loopback peers (unsafe behind a local proxy)
    tls_cert: Path | None = None  # PEM certificate chain: HTTPS and gRPC over TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA
    query_log_dir: Path | None = None  # None: no query log
    query_log_max_mb: float = 64
    connections_file: Path | None = None  # None: DATA_DIR/config/connections.json
    packages: list[Path] = field(default_factory=list)
    repository: str | None = None  # a directory or an http(s) URL: converge to its state.json
    poll_seconds: float = 5.0  # between two reads of the repository's state
    allow_empty: bool = False  # ready with nothing to serve
