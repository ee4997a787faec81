"""`apinode compile DIR [-o FILE]`: the compiler's command line.

`register(subparsers)` adds the subcommand to the `apinode` parser (node/cli.py);
`python -m compiler` builds a parser of its own with it. Exit status: 0 on success, 2 for a
user error (one line on stderr, never a traceback), 1 for a bug in the compiler.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

from compiler.errors import CompileError


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "compile",
        help="compile a service folder (service.yaml, models, data, code) into a package",
        description=(
            "Compile a service folder into a package (.apz): models converted to ONNX and "
            "checked against the originals, datasets, code and test queries."
        ),
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="the service folder (holds service.yaml)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="the package to write (default: ./<service>-<version>.apz)",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from compiler.build import compile_service

    try:
        compile_service(args.folder, args.output, progress=True)
    except CompileError as exc:
        print(f"apinode compile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("apinode compile: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            print(
                f"apinode compile: internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apinode", description="apinode compiler")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
