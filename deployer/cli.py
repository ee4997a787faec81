"""`apinode deploy ...` and `apinode dev DIR`: the argument parsers and the exit codes.

`register(subparsers)` adds both commands to the `apinode` command line; `python -m
deployer` runs them standalone. Exit codes a CI pipeline can rely on: 0 ok, 1 the
operation failed (refused, test query failed, rollout stopped), 2 usage error or bad file,
3 node unreachable. Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployer import commands, publish
from deployer.client import DEFAULT_TARGET
from deployer.errors import DeployError
from deployer.localkey import DEFAULT_DATA_DIR
from deployer.output import PROG, Output

Handler = Callable[[argparse.Namespace, Output], int]


def run_command(handler: Handler, args: argparse.Namespace, prog: str = PROG) -> int:
    out = Output(json_mode=getattr(args, "json", False), quiet=getattr(args, "quiet", False))
    try:
        return handler(args, out)
    except DeployError as exc:
        out.error(exc.message, prog)
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted", prog)
        return 130


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("node")
    g.add_argument(
        "--node",
        default=os.environ.get("APINODE_NODE", DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"the node's gRPC address (default {DEFAULT_TARGET}, or $APINODE_NODE)",
    )
    g.add_argument(
        "--admin-key",
        default=os.environ.get("APINODE_ADMIN_KEY"),
        metavar="KEY",
        help="admin key (default $APINODE_ADMIN_KEY; for a node on this machine, the first key of "
        "DATA_DIR/admin-keys.txt)",
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help="data dir of a node on this machine, whose generated admin key to use "
        "(default $APINODE_DATA_DIR or apinode-data, as apinode serve)",
    )
    t = p.add_argument_group("TLS (a node started with --tls-cert)")
    t.add_argument("--tls", action="store_true", help="connect over TLS, trusting the system's CAs")
    t.add_argument("--tls-ca", type=Path, metavar="PEM", help="connect over TLS, trusting this CA")
    t.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate (mutual TLS), with --tls-key")
    t.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    g.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per call (default 120)")
    g.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")


def _api_key(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--api-key", default=os.environ.get("APINODE_API_KEY"), metavar="KEY", help=help)


def _mapping_args(p: argparse.ArgumentParser, required: bool) -> None:
    if required:
        p.add_argument("mapping", metavar="MAPPING", help="GEN=PROBA,... summing to 1, e.g. v1=0.9,v2=0.1")
    p.add_argument("--hash", action="store_true", help="dispatch by hash of the request's dispatchKey (sticky)")


def _deploy_parser(sub: Any) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="push packages to nodes, switch generations, inspect and tune them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="ACTION")

    def action(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = dsub.add_parser(name, help=help, description=help)
        p.set_defaults(func=lambda args: run_command(handler, args))
        return p

    p = action("push", commands.cmd_push, "upload a package (and activate it, or serve it under a mapping)")
    p.add_argument("package", type=Path, metavar="PACKAGE")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--activate", action="store_true", help="make the new generation serve all traffic")
    how.add_argument("--mapping", metavar="MAPPING", help="serve under GEN=PROBA,... e.g. v1=0.9,v2=0.1")
    _mapping_args(p, required=False)
    p.add_argument("--sha256", metavar="HEX", help="the digest the node must find (e.g. recorded by the build)")
    p.add_argument("--infra", type=Path, metavar="FILE", help="rolling deployment over the nodes of this YAML file")
    p.add_argument(
        "--rollback-on-failure",
        action="store_true",
        help="with --infra: when a node fails, roll back the nodes already done",
    )
    p.add_argument("--health-timeout", type=float, default=30.0, metavar="S", help="with --infra (default 30)")
    _api_key(p, "with --infra: the service's API key for the test queries (default $APINODE_API_KEY)")
    _common(p)

    p = action("publish", publish.cmd_repository, "upload a package to a repository that nodes converge to")
    p.add_argument("package", type=Path, metavar="PACKAGE")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--activate", action="store_true", help="make the new generation serve all traffic")
    how.add_argument("--mapping", metavar="MAPPING", help="serve under GEN=PROBA,... e.g. v1=0.9,v2=0.1")
    _mapping_args(p, required=False)
    publish.add_repository_args(p, required=True)
    _common(p)

    p = action("list", commands.cmd_list, "services and generations: loaded, active, share")
    p.add_argument("service", nargs="?", metavar="SERVICE")
    _common(p)
    _common(action("status", commands.cmd_status, "per endpoint: readiness, workers, queue, counters"))

    p = action("activate", publish.or_repository(commands.cmd_activate), "make one generation serve all traffic")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("generation", metavar="GENERATION")
    publish.add_repository_args(p)
    _common(p)
    p = action("rollback", publish.or_repository(commands.cmd_rollback), "back to what served before the last switch")
    p.add_argument("service", metavar="SERVICE")
    publish.add_repository_args(p)
    _common(p)
    p = action("mapping", publish.or_repository(commands.cmd_mapping), "split traffic between generations")
    p.add_argument("service", metavar="SERVICE")
    _mapping_args(p, required=True)
    publish.add_repository_args(p)
    _common(p)
    for name, handler, help in (
        ("enable", commands.cmd_enable, "let a service answer again"),
        ("disable", commands.cmd_disable, "stop a service answering (kept on the node)"),
    ):
        p = action(name, publish.or_repository(handler), help)
        p.add_argument("service", metavar="SERVICE")
        publish.add_repository_args(p)
        _common(p)
    p = action("tune", publish.or_repository(commands.cmd_tune), "show or change an endpoint's pool settings")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.add_argument("settings", nargs="*", metavar="NAME=VALUE", help="e.g. floor=2 ceil=4 queue=32 timeout=5000")
    publish.add_repository_args(p)
    _common(p)
    p = action("delete", commands.cmd_delete, "delete a generation, or a whole service")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("generation", nargs="?", metavar="GENERATION")
    _common(p)
    p = action("test", commands.cmd_test, "play a package's test queries against a node (exit 1 if one fails)")
    p.add_argument("package", type=Path, metavar="PACKAGE")
    p.add_argument("--http", metavar="URL", help="over JSON HTTP at this base URL instead of gRPC")
    _api_key(p, "the service's API key (default $APINODE_API_KEY)")
    p.add_argument("--generation", metavar="GEN", help="pin the queries to this generation")
    _common(p)
    from deployer import keys

    keys.add_parsers(dsub, run_command, _common)


def _dev_parser(sub: Any) -> None:
    from deployer import dev

    p = sub.add_parser(
        "dev",
        help="compile a service folder, serve it locally, and hot-swap it on every change",
        description=dev.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--http-port", type=int, default=12000)
    p.add_argument("--grpc-port", type=int, default=12001)
    p.add_argument("--data-dir", type=Path, help="the node's data dir (default: a temporary one)")
    p.add_argument("--out", type=Path, help="where to write the package (default: a temporary dir)")
    p.add_argument(
        "--build-cmd",
        metavar="CMD",
        help="build command instead of the compiler, with {src} and {out} placeholders",
    )
    p.add_argument("--ports-file", type=Path, help="write the node's ports here once it serves")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between folder scans")
    p.add_argument("--node-log", type=Path, help="send the node's output here instead of the terminal")
    p.set_defaults(func=lambda args: run_command(dev.cmd_dev, args, "apinode dev"))


def register(subparsers: Any) -> None:
    """Adds `deploy` (with its actions) and `dev` to an argparse subparsers object."""
    _deploy_parser(subparsers)
    _dev_parser(subparsers)


def main(argv: list[str] | None = None, prog: str = "apinode") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="apinode deployer")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
