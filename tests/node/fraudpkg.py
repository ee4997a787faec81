"""The fraud example, trained by its own train.py and compiled by the real compiler (as
tests/node/test_example_live.py does), for tests that need its package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from compiler.build import compile_service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def build_fraud(tmp: Path, out: Path | None = None) -> Path:
    """Trains examples/fraud in `tmp/fraud` and compiles it (to `out`, default `tmp/fraud.apz`);
    returns the package."""
    folder = tmp / "fraud"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "model.joblib", "data"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(folder / "train.py")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    with threadpool_limits(limits=1):  # the parity check runs the model: no OpenMP threads on a shared machine
        return compile_service(folder, out or tmp / "fraud.apz", progress=False).out
