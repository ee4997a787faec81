"""Fixtures for deployer tests: versioned function packages, real nodes, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.package import write_package
from tests.nodeproc import NodeProc, run_node

# `version` answers the version string of its package; `fail` lets a test query break.
VERSION_CODE = """
import os

VERSION = {version!r}

def version(fail=False, **kwargs):
    if fail or {broken!r}:
        raise ValueError("broken on purpose in " + VERSION)
    return {{"version": VERSION, "pid": os.getpid(), "args": kwargs}}
"""


def make_package(
    out_dir: Path,
    version: str,
    *,
    service: str = "svc",
    broken: bool = False,
    tests: list[dict[str, Any]] | None = None,
    pool: dict[str, Any] | None = None,
) -> Path:
    """A function package whose endpoint `ver` returns {"version": version, ...}.

    `broken`: the function raises, so the package's test queries fail.
    """
    code = textwrap.dedent(VERSION_CODE.format(version=version, broken=broken)).encode()
    queries = tests if tests is not None else [{"x": 1}, {"x": 2, "tag": "b"}]
    manifest = {
        "service": service,
        "version": version,
        "endpoints": {
            "ver": {
                "type": "function",
                "code": {"path": "code/funcs.py", "root": "code", "function": "version"},
                "pool": pool or {"floor": 1, "ceil": 2},
                "test_queries": "tests/ver.json",
            }
        },
    }
    files: dict[str, bytes | Path] = {"code/funcs.py": code, "tests/ver.json": json.dumps(queries).encode()}
    out = out_dir / f"{service}-{version}{'-broken' if broken else ''}.apz"
    write_package(out, manifest, files)
    return out


def deploy(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m deployer deploy ARGS` (the real CLI, in a subprocess)."""
    cmd = [sys.executable, "-m", "deployer", "deploy", *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("APINODE_ADMIN_KEY", None) if env is None or "APINODE_ADMIN_KEY" not in env else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False)


def deploy_json(*args: str | Path) -> Any:
    r = deploy(*args, "--json")
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return json.loads(r.stdout)


@pytest.fixture
def packages(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "pkgs"
    pk = {v: make_package(out, v) for v in ("v1", "v2", "v3")}
    pk["broken"] = make_package(out, "v4", broken=True)
    return pk


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    with run_node(tmp_path / "node") as n:
        yield n
