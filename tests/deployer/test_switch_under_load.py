"""Generation switches under a steady load: no request fails, a rollback is instant (the
generation switched away from stays warm), and incoming generations load below the
serving workers' priority."""

from __future__ import annotations

import json
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from apz.archive import write_package
from tests.deployer.conftest import deploy, deploy_json, make_package, ok
from tests.inproc import run_node
from tests.steady_load import Load


def test_three_switches_and_a_rollback_under_load_fail_nothing(tmp_path: Path) -> None:
    pkgs = {v: make_package(tmp_path / "pkgs", v, pool={"floor": 1, "ceil": 4}) for v in ("v1", "v2", "v3", "v4")}
    with run_node(tmp_path / "node") as node:
        ok(deploy("push", pkgs["v1"], "--node", node.grpc, "--activate"))
        url = node.url("svc", "ver", "run")
        with Load(url, node.http + "/ready", {"x": 1}, clients=8) as load:
            node.wait_for(lambda: load.outcomes["ok"] > 200, 60, "a steady load")
            for v in ("v2", "v3", "v4"):
                ok(deploy("push", pkgs[v], "--node", node.grpc, "--activate"))
                if v == "v3":
                    v3_pids = node.pool("svc", "ver", "v3")["workers"]["pids"]
                time.sleep(0.5)
            warm = node.status()["services"]["svc"]["warm"]
            assert set(warm) == {"v3"}, "only the generation of the previous mapping stays warm"
            served = load.outcomes["ok"]
            state = deploy_json("rollback", "svc", "--node", node.grpc)
            assert state["mapping"]["entries"] == [{"generation": "v3", "proba": 1.0}]
            node.wait_for(lambda: load.outcomes["ok"] > served + 200, 60, "serving after the rollback")
        load.report("3 switches and a rollback under 8 HTTP clients")
        assert not load.lost, load.lost[:5]
        assert set(load.outcomes) == {"ok"}, load.outcomes
        assert load.not_ready == 0
        # the rollback started no worker: v3 serves with the processes it had
        assert node.pool("svc", "ver", "v3")["workers"]["pids"] == v3_pids
        r = requests.post(url, json={}, timeout=30).json()
        assert r["apiContext"]["serviceGeneration"] == "v3" and r["response"]["pid"] in v3_pids
        assert set(node.status()["services"]["svc"]["warm"]) == {"v4"}


NICE_CODE = """
import os

LOADED_AT = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's niceness, while loading


def nice():
    return {{"version": {version!r}, "load": LOADED_AT, "serve": os.getpriority(os.PRIO_PROCESS, 0)}}
"""


def _nice_package(out: Path, version: str) -> Path:
    manifest = {
        "service": "nice",
        "version": version,
        "endpoints": {"e": {"type": "function", "code": {"path": "code/f.py", "root": "code", "function": "nice"}}},
    }
    path = out / f"nice-{version}.apz"
    write_package(path, manifest, {"code/f.py": textwrap.dedent(NICE_CODE.format(version=version)).encode()})
    return path


def test_incoming_generation_loads_below_the_serving_priority(tmp_path: Path) -> None:
    v1, v2 = _nice_package(tmp_path, "v1"), _nice_package(tmp_path, "v2")
    with run_node(tmp_path / "node", v1) as node:
        url = node.url("nice", "e", "run")
        first = requests.post(url, json={}, timeout=30).json()["response"]
        assert first == {"version": "v1", "load": 10, "serve": 10}  # nothing served yet: no hurry to yield
        ok(deploy("push", v2, "--node", node.grpc, "--activate"))
        second = requests.post(url, json={}, timeout=30).json()["response"]
        assert second == {"version": "v2", "load": 15, "serve": 10}, json.dumps(second)


SLEEP_CODE = """
import os
import time
from concurrent.futures import ThreadPoolExecutor


def sleep(s=0.0):
    time.sleep(s)
    return {{"version": {version!r}, "pid": os.getpid()}}
"""


def _sleep_package(out: Path, version: str) -> Path:
    manifest = {
        "service": "grow",
        "version": version,
        "endpoints": {
            "e": {
                "type": "function",
                "code": {"path": "code/f.py", "root": "code", "function": "sleep"},
                "pool": {"floor": 1, "cruise": 3, "ceil": 4},
            }
        },
    }
    path = out / f"grow-{version}.apz"
    write_package(path, manifest, {"code/f.py": textwrap.dedent(SLEEP_CODE.format(version=version)).encode()})
    return path


def test_incoming_generation_starts_as_many_workers_as_the_serving_one(tmp_path: Path) -> None:
    """The traffic a switch moves needs the workers the serving generation grew to: the
    incoming one starts with as many, not with `floor` to grow under that traffic."""
    v1, v2 = _sleep_package(tmp_path, "v1"), _sleep_package(tmp_path, "v2")
    with run_node(tmp_path / "node", v1) as node:
        url = node.url("grow", "e", "run")
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda _: requests.post(url, json={"s": 1.0}, timeout=30), range(4)))
        grown = node.pool("grow", "e", "v1")["workers"]["total"]
        assert grown >= 3  # cruise 3 keeps them after the burst
        ok(deploy("push", v2, "--node", node.grpc, "--activate"))
        assert node.pool("grow", "e", "v2")["workers"]["total"] >= 3  # was floor: 1
