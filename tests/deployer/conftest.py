"""Fixtures for deployer tests: versioned packages, real nodes, the real CLI in subprocesses.

Function packages answer their own version (`{"version": "v2", ...}`) so a test can check
that an answer's `apiContext.serviceGeneration` and its content agree; prediction packages
(a one-feature ONNX model computing `x + offset`) cover dispatch in the JSON body.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apz.archive import write_package
from tests.nodeclient import node_at
from tests.nodeproc import NodeProc, run_node

VERSION_CODE = """
import os
from pathlib import Path

VERSION = {version!r}
BROKEN = {broken!r}
FAIL_IF_MARKER = {fail_if_marker!r}


def _marked():
    # A file FAIL_DEPLOY_TESTS in the node's data dir (an ancestor of this file) breaks us.
    return any((p / "FAIL_DEPLOY_TESTS").exists() for p in Path(__file__).resolve().parents)


def version(fail=False, **kwargs):
    if fail or BROKEN or (FAIL_IF_MARKER and _marked()):
        raise ValueError("broken on purpose in " + VERSION)
    return {{"version": VERSION, "pid": os.getpid(), "args": kwargs}}
"""


def make_package(
    out_dir: Path,
    version: str,
    *,
    service: str = "svc",
    broken: bool = False,
    fail_if_marker: bool = False,
    tests: list[dict[str, Any]] | None = None,
    pool: dict[str, Any] | None = None,
    extra: dict[str, bytes] | None = None,
    api_keys: list[str] | None = None,
) -> Path:
    """A function package: endpoint `ver` returns {"version": version, "pid", "args"}.

    `api_keys`: the service's keys (the manifest keeps their digests, ids key0, key1, ...).

    `broken`: the function always raises, so the package's test queries fail.
    `fail_if_marker`: it raises on nodes whose data dir holds FAIL_DEPLOY_TESTS.
    """
    code = VERSION_CODE.format(version=version, broken=broken, fail_if_marker=fail_if_marker)
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
    if api_keys:
        manifest["api_keys"] = [
            {"id": f"key{i}", "sha256": hashlib.sha256(k.encode()).hexdigest()} for i, k in enumerate(api_keys)
        ]
    files: dict[str, bytes | Path] = {
        "code/funcs.py": textwrap.dedent(code).encode(),
        "tests/ver.json": json.dumps(queries).encode(),
        **(extra or {}),
    }
    suffix = "-broken" if broken else "-marker" if fail_if_marker else ""
    out = out_dir / f"{service}-{version}{suffix}.apz"
    write_package(out, manifest, files)
    return out


def _offset_model(offset: float) -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [offset])
    graph = helper.make_graph([helper.make_node("Add", ["x", "k"], ["value"])], "offset", [x], [y], [k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()  # type: ignore[no-any-return]


def prediction_package(out_dir: Path, version: str, offset: float, *, service: str = "pred") -> Path:
    """A regression package whose prediction is `x + offset` (the offset names the version)."""
    manifest = {
        "service": service,
        "version": version,
        "endpoints": {
            "score": {
                "type": "prediction",
                "task": "regression",
                "features": [{"name": "x", "type": "float", "onnx_type": "float"}],
                "model": {"path": "models/score.onnx", "input_mode": "columns", "value_output": "value"},
                "pool": {"floor": 1, "ceil": 2},
                "test_queries": "tests/score.json",
            }
        },
    }
    files: dict[str, bytes | Path] = {
        "models/score.onnx": _offset_model(offset),
        "tests/score.json": json.dumps([{"features": {"x": 1.0}}]).encode(),
    }
    out = out_dir / f"{service}-{version}.apz"
    write_package(out, manifest, files)
    return out


def deploy(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 180, admin_key: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m deployer deploy ARGS`: the real CLI, in a subprocess.

    Admin planes are closed by default: for `--node ADDRESS` of a node this test process
    started, the node's admin key is added (`--admin-key`), unless the arguments (or `env`)
    give a key or a data dir (where the CLI finds it itself), or `admin_key=False`."""
    texts = [str(a) for a in args]
    given = any(t.startswith(("--admin-key", "--data-dir")) for t in texts) or "APINODE_ADMIN_KEY" in (env or {})
    if admin_key and "--node" in texts and not given:
        node = node_at(texts[texts.index("--node") + 1])
        if node is not None:
            texts += node.admin_args()
    cmd = [sys.executable, "-m", "deployer", "deploy", *texts]
    base = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})}, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def deploy_json(*args: str | Path) -> Any:
    return json.loads(ok(deploy(*args, "--json")).stdout)


def served_version(node: NodeProc, service: str = "svc", **headers: str) -> tuple[str, str]:
    """(apiContext.serviceGeneration, the version the function says) of one HTTP run."""
    import requests

    r = requests.post(node.url(service, "ver", "run"), json={}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["apiContext"]["serviceGeneration"], body["response"]["version"]


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
