"""`apinode`: the one command-line entry point.

apinode compile DIR [-o FILE]      service folder -> package (compiler/)
apinode serve [PACKAGE ...]        run a node (node/)
apinode loadtest ...               measure a node (loadtest/)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from node.settings import NodeSettings

# Workers are spawned with fork+exec while gRPC threads run: gRPC's fork handlers are moot.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run a node serving the packages of its data dir")
    p.add_argument("packages", nargs="*", type=Path, help="packages (.apz) to store and serve")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("APINODE_DATA_DIR", "apinode-data")))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=12000)
    p.add_argument("--grpc-port", type=int, default=12001)
    p.add_argument("--max-workers", type=int, default=None, help="node-wide cap on worker processes")
    p.add_argument(
        "--cpu-budget",
        default="auto",
        metavar="N|auto|off",
        help="CPUs the node's prediction workers may keep busy (auto: its affinity and cgroup CPU quota; "
        "off: grow up to each pool's ceil)",
    )
    p.add_argument(
        "--shed-lag-ms",
        type=int,
        default=200,
        help="while the event loop is this far behind, endpoints that queue refuse new requests at once (0: off)",
    )
    p.add_argument(
        "--queue-target-ms",
        type=int,
        default=10,
        help="a prediction endpoint whose queued requests wait longer than this for 100 ms on end is overloaded: "
        "it then queues at most one batch per worker and refuses the rest at once (0: off)",
    )
    p.add_argument("--onnx-threads", type=int, default=1, help="intra-op threads per ONNX session")
    p.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        choices=range(20),
        metavar="0-19",
        help="niceness added to worker processes, so the front's event loop wins a busy CPU (default 10)",
    )
    p.add_argument("--ping-timeout", type=float, default=10.0, help="seconds before a silent worker is hung")
    p.add_argument(
        "--keep-warm",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a generation switched away from stays loaded this long (or until the next switch) "
        "so a rollback is instant; 0 unloads it at once (default 600)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=20.0,
        help="seconds in-flight requests get on SIGTERM",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="on SIGTERM, seconds of serving on with /ready 503 before shutdown, so a load balancer "
        "(Kubernetes) takes the node out first (default 0; a second signal skips the rest)",
    )
    p.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds an HTTP request head may take (default 10)"
    )
    p.add_argument(
        "--body-timeout", type=float, default=60.0, help="seconds an HTTP request body may take (408; default 60)"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=75.0,
        help="seconds an HTTP keep-alive or gRPC connection may wait for a request (default 75)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="open connections per server, HTTP and gRPC (default 4096, lowered to fit the descriptor limit)",
    )
    p.add_argument(
        "--admin-key",
        action="append",
        default=[],
        help="admin key (repeatable); also $APINODE_ADMIN_KEY and DATA_DIR/admin-keys.txt; "
        "with none, one is generated into DATA_DIR/admin-keys.txt (mode 0600)",
    )
    p.add_argument(
        "--admin-open-loopback",
        action="store_true",
        help="let loopback callers use the admin API without a key (unsafe behind a proxy on this host)",
    )
    p.add_argument("--max-package-mb", type=float, default=2048, help="largest package PushPackage accepts")
    p.add_argument("--max-body-mb", type=float, default=32, help="largest HTTP request body (413 beyond)")
    p.add_argument("--max-grpc-message-mb", type=float, default=32, help="largest gRPC message, either way")
    p.add_argument("--max-items", type=int, default=10_000, help="most items in one predict-multi call")
    p.add_argument("--max-json-depth", type=int, default=64, help="deepest nesting of a JSON request body")
    p.add_argument(
        "--max-string-chars", type=int, default=65_536, help="longest string feature value or JSON body string"
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve HTTPS and gRPC over TLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--query-log", type=Path, help="directory of the query log (queries.jsonl); off when absent")
    p.add_argument("--query-log-max-mb", type=float, default=64, help="size at which the query log rotates")
    p.add_argument(
        "--connections",
        type=Path,
        help="JSON file of database connections for SQL endpoints (default DATA_DIR/config/connections.json)",
    )
    p.add_argument(
        "--repository",
        metavar="DIR|URL",
        default=os.environ.get("APINODE_REPOSITORY"),
        help="serve what this package repository's state.json says, and follow its changes ($APINODE_REPOSITORY)",
    )
    p.add_argument("--poll-seconds", type=float, default=5.0, help="seconds between reads of the repository state")
    p.add_argument(
        "--allow-empty", action="store_true", help="report ready even with nothing to serve (503 on /ready otherwise)"
    )
    p.add_argument("--ports-file", type=Path, help="write the bound ports as JSON here once serving")
    p.add_argument("--print-usage", action="store_true", help="print how to call the served endpoints")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_serve)


def _cpu_budget(value: str) -> int | None:
    """`--cpu-budget`: -1 auto, None off, else the number of CPUs."""
    if value == "auto":
        return -1
    if value == "off":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemExit(f"apinode serve: --cpu-budget must be auto, off or a number of CPUs >= 1, got {value!r}")
    return n


def settings_from_args(args: argparse.Namespace) -> NodeSettings:
    """`apinode serve`'s arguments as a node's settings (tests build in-process nodes so)."""
    return NodeSettings(
        data_dir=args.data_dir,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_workers=args.max_workers,
        cpu_budget=_cpu_budget(args.cpu_budget),
        shed_lag_ms=max(0, args.shed_lag_ms),
        queue_target_ms=max(0, args.queue_target_ms),
        onnx_threads=args.onnx_threads,
        worker_nice=args.worker_nice,
        ping_timeout=args.ping_timeout,
        shutdown_grace=args.shutdown_grace,
        drain_seconds=args.drain_seconds,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        keep_warm=args.keep_warm,
        packages=list(args.packages),
        admin_keys=list(args.admin_key)
        + ([os.environ["APINODE_ADMIN_KEY"]] if os.environ.get("APINODE_ADMIN_KEY") else []),
        admin_open_loopback=args.admin_open_loopback,
        max_package_bytes=int(args.max_package_mb * 1024 * 1024),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_grpc_message_bytes=int(args.max_grpc_message_mb * 1024 * 1024),
        max_items=args.max_items,
        max_json_depth=args.max_json_depth,
        max_string_chars=args.max_string_chars,
        query_log_dir=args.query_log,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        query_log_max_mb=args.query_log_max_mb,
        connections_file=args.connections,
        repository=args.repository,
        poll_seconds=args.poll_seconds,
        allow_empty=args.allow_empty,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from apz.vocab import PackageError
    from node.errors import ApiNodeError
    from node.server import Node, serve

    settings = settings_from_args(args)
    bad_limit = _check_limits(args)
    if bad_limit:
        print(f"apinode serve: {bad_limit}", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        print("apinode serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.repository and settings.packages:
        print("apinode serve: packages on the command line and --repository exclude each other", file=sys.stderr)
        return 2
    from node.repository import check_location

    bad_location = check_location(args.repository) if args.repository else None
    if bad_location:
        print(f"apinode serve: {bad_location}", file=sys.stderr)
        return 2
    if not args.poll_seconds > 0:
        print(f"apinode serve: --poll-seconds must be positive, got {args.poll_seconds}", file=sys.stderr)
        return 2
    for pkg in settings.packages:
        if not pkg.is_file():
            print(f"apinode serve: no such package: {pkg}", file=sys.stderr)
            return 2

    def started(node: Node) -> None:
        if args.ports_file:
            tmp = args.ports_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"http": node.http_port, "grpc": node.grpc_port, "pid": os.getpid()}))
            tmp.replace(args.ports_file)
        tls = "" if args.tls_cert is None else " (mutual TLS)" if args.tls_client_ca else " (TLS)"
        logging.getLogger("node").info(
            "serving on %s://%s:%d and grpc%s %s:%d",
            "https" if args.tls_cert else "http",
            args.host,
            node.http_port,
            tls,
            args.host,
            node.grpc_port,
        )
        if args.print_usage:
            from node.usage import usage

            print(usage(node, args.host), flush=True)

    try:
        uvloop.run(serve(settings, on_started=[started]))
    except PackageError as exc:
        print(f"apinode serve: {exc}", file=sys.stderr)
        return 2
    except ApiNodeError as exc:
        print(f"apinode serve: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"apinode serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_limits(args: argparse.Namespace) -> str | None:
    from node.dataplane import MAX_JSON_DEPTH_CAP

    for option, value in (
        ("--max-body-mb", args.max_body_mb),
        ("--max-grpc-message-mb", args.max_grpc_message_mb),
        ("--max-package-mb", args.max_package_mb),
        ("--max-items", args.max_items),
        ("--max-string-chars", args.max_string_chars),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
        ("--idle-timeout", args.idle_timeout),
        ("--max-connections", args.max_connections),
    ):
        if not value > 0:
            return f"{option} must be positive, got {value}"
    if not args.drain_seconds >= 0:
        return f"--drain-seconds must not be negative, got {args.drain_seconds}"
    if args.max_grpc_message_mb >= 2048:  # gRPC counts message sizes in a signed 32-bit int
        return f"--max-grpc-message-mb must be under 2048, got {args.max_grpc_message_mb}"
    if not 1 <= args.max_json_depth <= MAX_JSON_DEPTH_CAP:
        return f"--max-json-depth must be between 1 and {MAX_JSON_DEPTH_CAP}, got {args.max_json_depth}"
    return None


def build_parser() -> argparse.ArgumentParser:
    from compiler.cli import register as register_compile
    from deployer.cli import register as register_deployer
    from loadtest.cli import register as register_loadtest

    parser = argparse.ArgumentParser(prog="apinode", description="Real-time model serving node")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_compile(sub)
    _serve_parser(sub)
    register_deployer(sub)  # deploy ..., dev
    register_loadtest(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
