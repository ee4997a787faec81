"""Prediction pools are sized from the CPU budget: affinity and the cgroup CPU quota."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import aiohttp
import grpc

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from node.supervisor import cpus
from tests.nodeproc import NodeProc, run_node
from tests.packages import logistic_package


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_cgroup_v2_quota_is_read_from_the_process_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    fs = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/kubepods/pod1/cpu.max": "250000 100000\n",  # 2.5 CPUs for the pod
            "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n",
        },
    )
    b = cpus.detect(fs)
    assert b.quota == 2.5
    assert b.cpus == min(3, b.affinity)


def test_cgroup_v2_without_a_quota_leaves_the_affinity(tmp_path: Path) -> None:
    fs = _tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"})
    b = cpus.detect(fs)
    assert b.quota is None and b.cpus == len(os.sched_getaffinity(0)) and b.source.startswith("affinity")


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    fs = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    b = cpus.detect(fs)
    assert b.quota == 0.5 and b.cpus == 1 and b.source == "cgroup CPU quota (0.5 CPUs)"


def test_cgroup_v1_unlimited_and_garbage_are_no_quota(tmp_path: Path) -> None:
    fs = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "4:cpu:/\n",
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpus.detect(fs).quota is None
    assert cpus.v2_quota(_tree(tmp_path / "g", {"cpu.max": "lots 100000"}), "/") is None
    assert cpus.detect(tmp_path / "nothing-here").quota is None  # no /proc, no cgroup: affinity only


def test_budget_is_the_smaller_of_affinity_and_quota_rounded_up() -> None:
    assert cpus.budget(8, 1.5, None).cpus == 2
    assert cpus.budget(1, 4.0, None).cpus == 1
    assert cpus.budget(4, None, 3.0).cpus == 3
    assert cpus.budget(4, 0.01, None).cpus == 1


async def _closed_loop(node: NodeProc, clients: int, per_client: int) -> None:
    """`clients` HTTP and as many gRPC unary clients (where pools used to grow on one core)."""
    url = node.url("fraud", "score", "predict")
    body = {"features": {"amount": 1.5, "hour": 3, "distance": 0.2}}
    req = pb.PredictRequest(service="fraud", endpoint="score")
    req.features["amount"].number = 1.5
    req.features["hour"].integer = 3
    req.features["distance"].number = 0.2
    async with (
        grpc.aio.insecure_channel(node.grpc) as ch,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session,
    ):
        stub = pbg.ApiNodeStub(ch)

        async def client() -> None:
            for _ in range(per_client):
                async with session.post(url, json=body) as r:
                    assert r.status == 200, await r.text()

        async def grpc_client() -> None:
            for _ in range(per_client):
                await stub.Predict(req, timeout=60)

        await asyncio.gather(*(client() for _ in range(clients)), *(grpc_client() for _ in range(clients)))


def test_a_node_on_one_cpu_never_grows_a_prediction_pool_past_one_worker(tmp_path: Path) -> None:
    pkg, _ = logistic_package(tmp_path, pool={"grow_after_ms": 0})  # defaults, and eager growth
    with run_node(tmp_path / "data", pkg, cpus={0}) as node:
        budget = node.status()["supervisor"]["cpuBudget"]
        assert budget["cpus"] == 1 and budget["affinity"] == 1, budget
        sizes: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                sizes.append(node.pool("fraud", "score")["workers"]["total"])
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            asyncio.run(_closed_loop(node, clients=32, per_client=20))
        finally:
            stop.set()
            watcher.join(30)
        pool = node.pool("fraud", "score")
        assert pool["served"] >= 2 * 32 * 20 and pool["batches"] > 0, pool  # it was loaded: requests waited
        assert sizes and max(sizes) == 1, sizes
        assert node.status()["supervisor"]["cpuBudget"]["predictionWorkers"] == 1


def test_cpu_budget_off_lets_the_pool_grow(tmp_path: Path) -> None:
    """The same load, `--cpu-budget off`: the pool grows (so the test above can fail)."""
    pkg, _ = logistic_package(tmp_path, pool={"grow_after_ms": 0})
    with run_node(tmp_path / "data", pkg, cpus={0}, args=["--cpu-budget", "off"]) as node:
        assert node.status()["supervisor"]["cpuBudget"] is None
        asyncio.run(_closed_loop(node, clients=32, per_client=20))
        # retiring takes idle_grace_ms (30 s): the grown workers are still there
        assert node.pool("fraud", "score")["workers"]["total"] > 1
