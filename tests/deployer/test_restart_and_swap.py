"""A node restart keeps what the deployer set; pushes under load lose no request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import requests

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc
from tests.deployer.conftest import deploy, deploy_json, make_package, ok
from tests.inproc import run_node


def test_restart_keeps_generations_mapping_and_tuning(tmp_path: Path, packages: dict[str, Path]) -> None:
    data = tmp_path / "node"
    with run_node(data) as node:
        ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
        ok(deploy("push", packages["v2"], "--node", node.grpc, "--activate"))
        ok(deploy("push", packages["v3"], "--node", node.grpc))
        ok(deploy("mapping", "svc", "v1=0.25,v2=0.75", "--hash", "--node", node.grpc))
        ok(deploy("tune", "svc", "ver", "floor=2", "ceil=3", "queue=7", "--node", node.grpc))
        before = deploy_json("list", "--node", node.grpc)
        tuning = deploy_json("tune", "svc", "ver", "--node", node.grpc)
    with run_node(data) as node:
        after = deploy_json("list", "--node", node.grpc)
        assert after["services"] == before["services"]
        (svc,) = after["services"]
        assert svc["mapping"]["mode"] == "hash"
        assert [(g["generation"], g["active"], g["share"]) for g in svc["generations"]] == [
            ("v1", True, 0.25),
            ("v2", True, 0.75),
            ("v3", False, 0.0),
        ]
        assert deploy_json("tune", "svc", "ver", "--node", node.grpc) == tuning
        assert tuning["pool"]["queue"] == 7
        node.wait_for(lambda: node.pool("svc", "ver", "v2")["workers"]["idle"] >= 2, what="floor=2 applied")
        r = requests.post(node.url("svc", "ver", "run"), json={}, headers={"X-Dispatch-Key": "k"}, timeout=30)
        assert r.status_code == 200
        # rollback history survives too: back to v2 alone
        state = deploy_json("rollback", "svc", "--node", node.grpc)
        assert state["mapping"]["entries"] == [{"generation": "v2", "proba": 1.0}]


def test_zero_downtime_hot_swaps(tmp_path: Path) -> None:
    pkgs = tmp_path / "pkgs"
    versions = ["v1", "v2", "v3", "v4"]
    packages = {v: make_package(pkgs, v, pool={"floor": 1, "ceil": 4}) for v in versions}
    with run_node(tmp_path / "node") as node:
        ok(deploy("push", packages["v1"], "--node", node.grpc, "--activate"))
        stop = threading.Event()
        answers: Counter[str] = Counter()
        failures: list[str] = []
        lock = threading.Lock()

        def check(context_gen: str, said: str) -> None:
            with lock:
                if context_gen != said or context_gen not in versions:
                    failures.append(f"context {context_gen} but content {said}")
                answers[context_gen] += 1

        def http_load() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    try:
                        r = s.post(node.url("svc", "ver", "run"), json={"x": 1}, timeout=30)
                        if r.status_code != 200:
                            failures.append(f"HTTP {r.status_code}: {r.text}")
                            continue
                        body = r.json()
                        check(body["apiContext"]["serviceGeneration"], body["response"]["version"])
                    except requests.RequestException as exc:
                        failures.append(f"HTTP {exc!r}")

        def grpc_load() -> None:
            with grpc.insecure_channel(node.grpc) as ch:
                stub = apinode_pb2_grpc.ApiNodeStub(ch)
                while not stop.is_set():
                    try:
                        reply = stub.Run(pb.RunRequest(service="svc", endpoint="ver"), timeout=30)
                        check(reply.api_context.service_generation, reply.response.struct_value["version"])
                    except grpc.RpcError as exc:
                        failures.append(f"gRPC {exc.code()}: {exc.details()}")

        threads = [threading.Thread(target=http_load) for _ in range(4)]
        threads += [threading.Thread(target=grpc_load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            for v in versions[1:]:
                ok(deploy("push", packages[v], "--node", node.grpc, "--activate"))
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not failures, failures[:10]
        assert set(answers) == set(versions), answers
        assert sum(answers.values()) > 200, answers
        r = requests.post(node.url("svc", "ver", "run"), json={}, timeout=30).json()
        assert r["apiContext"]["serviceGeneration"] == "v4"
