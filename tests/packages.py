"""Packages for node tests, written with the package format's own writer.

Node tests build packages directly (the compiler has its own tests); prediction packages
for parity tests go through the real compiler (`tests/compiler` and `tests/node/test_parity.py`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from node.package import write_package

# Functions used by the supervisor tests: sleeping, crashing, hanging, failing.
FAULTS_CODE = """
import os
import signal
import time

def echo(**kwargs):
    return kwargs

def sleep(s=0.1, tag=None):
    time.sleep(s)
    return {"slept": s, "tag": tag, "pid": os.getpid()}

def pid():
    return os.getpid()

def crash(code=7):
    os._exit(code)

def hang():
    os.kill(os.getpid(), signal.SIGSTOP)  # stops answering anything, pings included
    return "unreachable"

def boom(message="boom"):
    raise ValueError(message)

def add(a, b=1, **extra):
    return {"sum": a + b, "extra": extra}
"""


def function_package(
    out_dir: Path,
    endpoints: dict[str, dict[str, Any]],
    *,
    service: str = "svc",
    version: str = "v1",
    code: str = FAULTS_CODE,
) -> Path:
    """`endpoints`: id -> {"function": name, "pool": {...}} over `code` (code/funcs.py)."""
    manifest: dict[str, Any] = {"service": service, "version": version, "endpoints": {}}
    for eid, e in endpoints.items():
        manifest["endpoints"][eid] = {
            "type": "function",
            "code": {"path": "code/funcs.py", "root": "code", "function": e["function"]},
            "pool": e.get("pool", {}),
        }
    out = out_dir / f"{service}-{version}.apz"
    write_package(out, manifest, {"code/funcs.py": textwrap.dedent(code).encode()})
    return out
