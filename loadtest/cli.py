"""`apinode loadtest`: the load generator's command line.

    apinode loadtest --url http://127.0.0.1:12000 --payload build/fraud.apz --endpoint score -c 16 -d 10s
    apinode loadtest --grpc 127.0.0.1:12001 --mode grpc-stream --payload rows.csv \\
        --service fraud --endpoint score --rate 5000 --poisson --procs 2 --json -
    apinode loadtest --url ... --service fraud --endpoint score --payload q.jsonl \\
        --sweep 1,4,16,64 --slo-p99 5ms --plot s.png

A sweep turns the concurrency, or the rate when ``--rate`` or ``--poisson`` is given.
Exit status: 0 done, 1 the run failed (nothing served), 2 bad arguments, 3 the objective
was not met.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from loadtest.config import (
    DEFAULT_GRPC,
    DEFAULT_URL,
    HTTP_CLIENTS,
    MODES,
    VERBS,
    ConfigError,
    LoadConfig,
    Mode,
    Target,
    parse_cpus,
    parse_duration,
    parse_latency,
    parse_steps,
)

EXIT_USAGE = 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``loadtest`` subcommand; its ``func`` runs it and returns the exit status."""
    p = subparsers.add_parser(
        "loadtest",
        help="measure a node: closed/open loop load over HTTP or gRPC",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=main)
    parser: argparse.ArgumentParser = p
    return parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--url", help="HTTP base URL (default http://127.0.0.1:12000)")
    t.add_argument("--grpc", metavar="HOST:PORT", help="gRPC address (default mode grpc)")
    t.add_argument("--mode", choices=MODES, help="http | grpc (unary) | grpc-stream")
    t.add_argument("--service", help="service id (default: the package's)")
    t.add_argument("--endpoint", help="endpoint id (default: the package's only endpoint)")
    t.add_argument(
        "--verb",
        choices=VERBS,
        help="default: the verb of the endpoint's kind (lookup, query, run, predict) from a .apz payload, else predict",
    )
    t.add_argument("--path", help="HTTP: send to this path instead of the Dataiku route")
    t.add_argument("--method", default="POST", help="HTTP method (default POST)")
    t.add_argument("--api-key", help="HTTP Basic user / gRPC 'authorization: Bearer' key")
    b = p.add_argument_group("payload")
    b.add_argument("--payload", help=".apz (its test queries), .jsonl bodies or .csv rows")
    b.add_argument("--sample", action="store_true", help="pick bodies at random, not in turn")
    b.add_argument("--seed", type=int, help="random seed (sampling, Poisson gaps)")
    ld = p.add_argument_group("load")
    ld.add_argument("-c", "--concurrency", type=int, default=1, help="closed-loop clients")
    ld.add_argument("--rate", type=float, help="open loop: requests per second")
    ld.add_argument("--poisson", action="store_true", help="open loop, exponential gaps")
    ld.add_argument("--max-inflight", type=int, default=10_000, help="open-loop in-flight cap")
    ld.add_argument("--connections", type=int, help="HTTP connections / gRPC streams")
    ld.add_argument("--channels", type=int, default=1, help="gRPC channels per process")
    ld.add_argument(
        "--http-client", choices=HTTP_CLIENTS, default="fast", help="fast (raw asyncio, default) or aiohttp"
    )
    ld.add_argument("-d", "--duration", type=parse_duration, help="e.g. 10s (default 10s)")
    ld.add_argument("-n", "--requests", type=int, help="stop after this many requests")
    ld.add_argument("--warmup", type=parse_duration, default=0.0, help="unmeasured lead-in")
    ld.add_argument("--timeout", type=parse_duration, default=30.0, help="per request")
    ld.add_argument("--procs", type=int, default=1, help="client processes")
    ld.add_argument("--cpus", type=parse_cpus, help="pin the generator, e.g. 2,3 or 4-7")
    s = p.add_argument_group("sweep and objective")
    s.add_argument("--sweep", type=parse_steps, help="steps, e.g. 1,4,16,64")
    s.add_argument("--slo-p99", type=parse_latency, help="p99 bound of served answers, e.g. 5ms")
    s.add_argument("--max-errors", type=_ratio, help="error budget, e.g. 1%% or 0.01")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    o.add_argument("--plot", metavar="FILE.png", help="write a PNG chart")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress line")


def _ratio(text: str) -> float:
    try:
        value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ratio: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("the error budget is between 0 and 1 (0% and 100%)")
    return value


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """The :class:`LoadConfig` the arguments describe (payload packages fill in the target)."""
    service, endpoint, verb = args.service, args.endpoint, args.verb
    if args.payload and args.payload.lower().endswith(".apz"):
        from loadtest.payloads import package_info

        info = package_info(args.payload, endpoint)
        service = service or info.service
        endpoint = endpoint or info.endpoint
        verb = verb or info.verb
    mode: Mode = args.mode or ("grpc" if args.grpc and not args.url else "http")
    target = Target(
        mode=mode,
        url=args.url or DEFAULT_URL,
        grpc=args.grpc or DEFAULT_GRPC,
        service=service,
        endpoint=endpoint,
        verb=verb or "predict",
        path=args.path,
        method=args.method,
        api_key=args.api_key,
    )
    rate = args.rate
    if rate is None and args.poisson:
        if not args.sweep:
            raise ConfigError("--poisson needs --rate (or --sweep over rates)")
        rate = args.sweep[0]
    duration = args.duration
    if duration is None and args.requests is None:
        duration = 10.0
    return LoadConfig(
        target=target,
        payload=args.payload,
        sample=args.sample,
        seed=args.seed,
        concurrency=args.concurrency,
        rate=rate,
        poisson=args.poisson,
        duration=duration,
        requests=args.requests,
        warmup=args.warmup,
        procs=args.procs,
        max_inflight=args.max_inflight,
        connections=args.connections,
        channels=args.channels,
        timeout=args.timeout,
        cpus=args.cpus,
        http_client=args.http_client,
    ).validate()


def main(args: argparse.Namespace) -> int:
    """Runs ``apinode loadtest``; returns the exit status."""
    try:
        config = config_from_args(args)
        if config.bodies is None and config.payload is not None:
            from loadtest.payloads import load_bodies

            load_bodies(config.payload, config.target.endpoint)  # fail before any process starts
    except ConfigError as exc:
        print(f"apinode loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from loadtest.session import run_session

    try:
        return run_session(config, args)
    except KeyboardInterrupt:
        print("apinode loadtest: interrupted", file=sys.stderr)
        return 130


def standalone(argv: list[str] | None = None) -> int:
    """``python -m loadtest [loadtest] FLAGS``: the subcommand without the node around it."""
    parser = argparse.ArgumentParser(prog="python -m loadtest")
    register(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["loadtest"]:
        argv.insert(0, "loadtest")
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
