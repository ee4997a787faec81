"""The `apinode deploy` subcommands: parsed arguments in, a client call, output, exit code.

Each `cmd_*` takes the argparse namespace and an :class:`Output` and returns the exit code;
failures are raised as :class:`~deployer.errors.DeployError` and turned into one stderr
line and an exit code by :func:`deployer.cli.run_command`.
"""

from __future__ import annotations

import argparse

from rich.markup import escape

from deployer.client import AdminClient
from deployer.errors import EXIT_FAILED, EXIT_OK, UsageError
from deployer.localkey import local_admin_key
from deployer.models import Mapping, to_json
from deployer.output import (
    Output,
    rollout_table,
    services_table,
    status_table,
    tests_summary,
    tests_table,
    tuning_table,
    upload_bar,
)
from deployer.packagefile import LocalPackage, open_package
from deployer.rollout import Rollout, load_infra
from deployer.testplay import play_grpc, play_http
from deployer.transport import Tls


def tls_of(args: argparse.Namespace) -> Tls | None:
    return Tls.of(args.tls_ca, args.tls_cert, args.tls_key, enabled=args.tls)


def client_of(args: argparse.Namespace) -> AdminClient:
    key = args.admin_key or local_admin_key(args.data_dir, args.node)
    return AdminClient(args.node, key, timeout=args.timeout, tls=tls_of(args))


def _mapping(args: argparse.Namespace) -> Mapping | None:
    if getattr(args, "mapping", None) is None:
        if getattr(args, "hash", False):
            raise UsageError("--hash needs --mapping")
        return None
    return Mapping.parse(args.mapping, hash_mode=args.hash)


def cmd_push(args: argparse.Namespace, out: Output) -> int:
    pkg = open_package(args.package)
    mapping = _mapping(args)
    if args.infra is not None:
        return _rollout(args, out, pkg, mapping)
    if args.rollback_on_failure:
        raise UsageError("--rollback-on-failure goes with --infra")
    with client_of(args) as client:
        client.connect()
        with upload_bar(out.err, f"{args.node} ← {pkg.path.name}", not out.quiet) as on_progress:
            result = client.push(
                pkg, activate=args.activate, mapping=mapping, sha256=args.sha256, on_progress=on_progress
            )
    if out.json_mode:
        out.json({"node": args.node, **to_json(result)})
        return EXIT_OK
    what = "new generation" if result.new else "generation (already on the node, unchanged)"
    out.note(f"pushed {result.service} {what} [bold]{result.generation}[/] to {args.node}")
    if result.state is not None and result.state.serving:
        out.note(f"{result.service} serves {result.state.mapping.describe()}")
    elif not result.activated:
        out.note(f"not serving yet: apinode deploy activate {result.service} {result.generation}")
    if result.tests:
        out.show(tests_table(result.tests, f"test queries of {result.generation} (played by the node)"))
        out.note(tests_summary(result.tests))
    return EXIT_OK


def _rollout(args: argparse.Namespace, out: Output, pkg: LocalPackage, mapping: Mapping | None) -> int:
    """`push --infra`: activates (or maps) node after node; see :mod:`deployer.rollout`."""
    if args.sha256:
        raise UsageError("--sha256 is not supported with --infra")
    nodes = load_infra(args.infra)
    rollout = Rollout(
        pkg,
        nodes,
        mapping=mapping,
        default_admin_key=args.admin_key,
        local_data_dir=args.data_dir,
        default_api_key=args.api_key,
        default_tls=tls_of(args),
        timeout=args.timeout,
        health_timeout=args.health_timeout,
        rollback_on_failure=args.rollback_on_failure,
        progress=lambda label: upload_bar(out.err, label, not out.quiet),
        notify=lambda message: None if out.quiet else out.err.print(escape(message)),
    )
    result = rollout.run()
    if out.json_mode:
        out.json(result.to_json())
    else:
        out.show(rollout_table(result.outcomes, f"rollout of {result.service} {result.generation}"))
    stop = result.stopped_at
    if stop is not None:
        out.error(f"rollout stopped at node {stop.node} ({stop.target}), step {stop.step}: {stop.message}")
        return EXIT_FAILED
    out.note(f"{result.service} {result.generation} rolled out to {len(result.outcomes)} nodes")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    with client_of(args) as client:
        services = [client.service(args.service)] if args.service else client.list_services()
    if out.json_mode:
        out.json({"node": args.node, "services": services})
    elif not services:
        out.note(f"no services on {args.node}")
    else:
        out.show(services_table(services, args.node))
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    with client_of(args) as client:
        status = client.status()
    if out.json_mode:
        out.json({"node": args.node, "ready": status.ready, "endpoints": status.endpoints, "document": status.document})
    else:
        out.show(status_table(status, args.node))
        reasons = status.document.get("notReady") or []
        for reason in reasons:
            out.note(f"[red]not ready:[/] {escape(str(reason))}")
    return EXIT_OK


def _state_command(args: argparse.Namespace, out: Output) -> int:
    with client_of(args) as client:
        if args.deploy_command == "activate":
            state = client.activate(args.service, args.generation)
        elif args.deploy_command == "rollback":
            state = client.rollback(args.service)
        elif args.deploy_command == "mapping":
            mapping = Mapping.parse(args.mapping, hash_mode=args.hash)
            state = client.set_mapping(args.service, mapping)
        elif args.deploy_command == "enable":
            state = client.enable(args.service)
        elif args.deploy_command == "disable":
            state = client.disable(args.service)
        else:
            raise AssertionError(args.deploy_command)
    if out.json_mode:
        out.json(state)
    else:
        enabled = "" if state.enabled else " [yellow](disabled)[/]"
        out.note(f"{state.service} serves {state.mapping.describe()}{enabled}")
    return EXIT_OK


cmd_activate = cmd_rollback = cmd_mapping = cmd_enable = cmd_disable = _state_command


def _tuning_values(pairs: list[str]) -> dict[str, int]:
    values: dict[str, int] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad setting {pair!r}: expected NAME=INTEGER (e.g. floor=2)")
        try:
            values[key] = int(raw)
        except ValueError:
            raise UsageError(f"bad value for {key}: {raw!r} is not an integer") from None
    return values


def cmd_tune(args: argparse.Namespace, out: Output) -> int:
    values = _tuning_values(args.settings)
    with client_of(args) as client:
        if values:
            tuning = client.set_tuning(args.service, args.endpoint, values)
        else:
            tuning = client.get_tuning(args.service, args.endpoint)
    if out.json_mode:
        out.json(tuning)
    else:
        out.show(tuning_table(tuning))
        if tuning.source:
            out.note(f"[dim]overrides live in {escape(tuning.source)}[/]")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, out: Output) -> int:
    with client_of(args) as client:
        if args.generation:
            state = client.delete_generation(args.service, args.generation)
            if out.json_mode:
                out.json(state)
            else:
                out.note(f"deleted {args.service} {args.generation}")
            return EXIT_OK
        client.delete_service(args.service)
    if out.json_mode:
        out.json({"service": args.service, "deleted": True})
    else:
        out.note(f"deleted service {args.service}")
    return EXIT_OK


def cmd_test(args: argparse.Namespace, out: Output) -> int:
    pkg = open_package(args.package)
    queries = pkg.test_queries()
    if not queries:
        raise UsageError(f"{pkg.path} has no test queries")
    play, where = (play_http, args.http) if args.http else (play_grpc, args.node)
    results = play(
        where,
        pkg.service,
        queries,
        api_key=args.api_key,
        forced_generation=args.generation,
        timeout=args.timeout,
        tls=tls_of(args),
    )
    ok = all(r.ok for r in results)
    if out.json_mode:
        out.json({"node": where, "service": pkg.service, "ok": ok, "results": results})
    else:
        out.show(tests_table(results, f"test queries of {pkg.path.name} against {where}"))
        out.note(tests_summary(results))
    if not ok:
        failed = next(r for r in results if not r.ok)
        out.error(f"test query #{failed.index} of {failed.endpoint} failed: {failed.error}")
        return EXIT_FAILED
    return EXIT_OK
