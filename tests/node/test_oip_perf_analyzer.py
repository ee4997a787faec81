"""Triton's `perf_analyzer`, unchanged, against a live node, over HTTP and gRPC.

It comes in the tritonclient wheel and links `libb64.so.0d` and `libcudart.so.12` (even
without a GPU): tests/setup_services.sh installs Debian's libb64-0d and PyPI's
nvidia-cuda-runtime-cu12, whose library folder goes on LD_LIBRARY_PATH here. It reads the
model's config, sends rows, and reads Triton's statistics, whose versions it parses as
integers: the package's generation is "1".
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.nodeproc import NodeProc, run_node
from tests.packages import logistic_package

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    tmp = tmp_path_factory.mktemp("oip-perf")
    pkg, _ = logistic_package(tmp, version="1")
    with run_node(tmp / "data", pkg) as n:
        yield n


def _env() -> dict[str, str]:
    import nvidia.cuda_runtime  # PyPI's CUDA runtime: a namespace package holding lib/

    lib = os.path.join(next(iter(nvidia.cuda_runtime.__path__)), "lib")
    assert os.path.exists(os.path.join(lib, "libcudart.so.12")), lib
    return dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(p for p in (lib, os.environ.get("LD_LIBRARY_PATH")) if p))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_the_node(node: NodeProc, tmp_path: Path, protocol: str) -> None:
    x = np.random.default_rng(3).normal(size=(8, 3))
    x[:, 1] = np.round(x[:, 1] * 3)  # `hour` is an int feature: random bytes would not pass
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"data": [{"input": {"content": r.tolist(), "shape": [3]}} for r in x]}))
    report = tmp_path / "report.csv"
    url = node.grpc if protocol == "grpc" else node.http.removeprefix("http://")
    before = requests.get(node.http + "/v2/models/fraud.score/versions/1/stats", timeout=10).json()
    run = subprocess.run(
        [
            str(PERF_ANALYZER),
            *("-m", "fraud.score", "-u", url, "-i", protocol, "--input-data", str(rows)),
            *("--measurement-interval", "500", "--concurrency-range", "1:2", "-s", "100", "-f", str(report)),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Throughput:" in run.stdout and "Inference count:" in run.stdout, run.stdout  # client and server sides
    with report.open() as f:
        measured = {int(r["Concurrency"]): float(r["Inferences/Second"]) for r in csv.DictReader(f)}
    assert set(measured) == {1, 2} and all(v > 0 for v in measured.values()), measured
    after = requests.get(node.http + "/v2/models/fraud.score/versions/1/stats", timeout=10).json()
    count = [s["model_stats"][0]["inference_count"] for s in (before, after)]
    assert count[1] - count[0] >= 10, count
