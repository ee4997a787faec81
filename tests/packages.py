"""Packages for node tests, written with the package format's own writer.

Node tests build packages directly (the compiler has its own tests); prediction packages
for parity tests go through the real compiler (`tests/compiler` and `tests/node/test_parity.py`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from apz.archive import write_package

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
    api_keys: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """`endpoints`: id -> {"function": name, "pool": {...}} over `code` (code/funcs.py)."""
    import hashlib

    manifest: dict[str, Any] = {"service": service, "version": version, "endpoints": {}, **(extra or {})}
    if api_keys:
        manifest["api_keys"] = [
            {"id": f"key{i}", "sha256": hashlib.sha256(k.encode()).hexdigest()} for i, k in enumerate(api_keys)
        ]
    for eid, e in endpoints.items():
        manifest["endpoints"][eid] = {
            "type": "function",
            "code": {"path": "code/funcs.py", "root": "code", "function": e["function"]},
            "pool": e.get("pool", {}),
        }
    out = out_dir / f"{service}-{version}.apz"
    write_package(out, manifest, {"code/funcs.py": textwrap.dedent(code).encode()})
    return out


def logistic_package(
    out_dir: Path, *, service: str = "fraud", version: str = "v1", pool: dict[str, Any] | None = None
) -> tuple[Path, Any]:
    """A LogisticRegression on three numeric features with string labels, as a package and
    the fitted model (matrix input mode, double precision). `pool`: its pool settings ({}:
    the defaults)."""
    import json

    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0, "FRAUD", "OK")
    model = LogisticRegression().fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("input", DoubleTensorType([None, 3]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    features = [
        {"name": "amount", "type": "float", "onnx_type": "double", "nullable": False},
        {"name": "hour", "type": "int", "onnx_type": "double", "nullable": False},
        {"name": "distance", "type": "float", "onnx_type": "double", "nullable": False},
    ]
    manifest = {
        "service": service,
        "version": version,
        "endpoints": {
            "score": {
                "type": "prediction",
                "task": "binary",
                "features": features,
                "classes": model.classes_.tolist(),
                "model": {
                    "path": "models/score.onnx",
                    "input_mode": "matrix",
                    "input_name": "input",
                    "label_output": "label",
                    "proba_output": "probabilities",
                },
                "test_queries": "tests/score.json",
                "pool": {"floor": 1, "cruise": 1, "ceil": 2, "queue": 256} if pool is None else pool,
            }
        },
    }
    queries = [{"features": {"amount": 1.0, "hour": 3, "distance": 0.5}}]
    out = out_dir / f"{service}-{version}.apz"
    write_package(
        out,
        manifest,
        {"models/score.onnx": onx.SerializeToString(), "tests/score.json": json.dumps(queries).encode()},
    )
    return out, model
