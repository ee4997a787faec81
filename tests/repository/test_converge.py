"""Three nodes serve from one package repository (a directory, and HTTP through a real nginx
with WebDAV PUT); `apinode deploy publish ... --repository` reaches them all under load,
broken packages leave them on the last good state, a node started later serves the
current state before it reports ready, and `--wait` names a node that does not converge.

The nodes of one repository kind are shared by the tests of this module (in order: each
test starts from whatever the previous one left and publishes a new state).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import inproc
from tests.deployer.conftest import deploy, make_package, ok
from tests.nginx import start_nginx
from tests.repository.helpers import KEY, Fleet, Load, pool, served, status, wait_ready

pytestmark = pytest.mark.xdist_group("repository-fleet")


@pytest.fixture(scope="module", params=["dir", "http"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    server = None
    if request.param == "http":
        server = start_nginx()
        repository, www = server.url, server.www
    else:
        www = tmp / "repo"
        www.mkdir()
        repository = str(www)
    f = Fleet(repository, www, tmp / "pkgs", start_node=inproc.start_node)
    try:
        ok(deploy("publish", make_package(f.pkgdir, "v1"), "--repository", repository, "--activate"))
        for i in range(3):
            f.start(f"node{i}")
        for node in f.nodes:
            wait_ready(node)
            assert served(node) == "v1"
        yield f
    finally:
        for node in f.nodes:
            node.stop()
        if server is not None:
            server.stop()


def _publish(fleet: Fleet, *args: str | Path, timeout: float = 120) -> tuple[int, dict[str, object], str]:
    r = deploy(
        *args,
        "--repository",
        fleet.repository,
        "--wait",
        "--nodes",
        fleet.grpc_targets,
        "--admin-key",
        KEY,
        "--wait-timeout",
        str(timeout),
        "--json",
    )
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def test_publish_reaches_every_node_without_losing_a_request(fleet: Fleet) -> None:
    version, pkg = fleet.package()
    with Load(fleet.nodes) as load:
        time.sleep(1.0)  # traffic on every node before the switch
        t0 = time.monotonic()
        code, doc, err = _publish(fleet, "publish", pkg, "--activate")
        elapsed = time.monotonic() - t0
        assert code == 0, err
        time.sleep(1.0)  # and after it
    seconds = max(float(n["seconds"]) for n in doc["nodes"])  # type: ignore[attr-defined]
    print(
        f"\n[{fleet.repository[:4]}] publish {version} reached 3 nodes in {seconds:.2f} s after the state was "
        f"written ({elapsed:.2f} s for the whole deploy command); load: sent {load.counts['sent']}, "
        f"ok {load.counts['ok']}, failed {load.counts['failed']}, lost {load.counts['lost']}, "
        f"versions {dict(load.versions)}"
    )
    assert [n["status"] for n in doc["nodes"]] == ["ok"] * 3  # type: ignore[attr-defined]
    assert load.counts["failed"] == 0 and load.counts["lost"] == 0, load.errors
    assert load.counts["sent"] == load.counts["ok"] > 0
    assert load.versions[version] > 0  # the load saw the switch happen
    for node in fleet.nodes:
        assert served(node) == version
        repo = status(node)["repository"]
        assert repo["synced"] is True and repo["lastError"] is None and repo["serial"] == doc["serial"]


def test_tune_and_disable_follow_the_repository(fleet: Fleet) -> None:
    code, _, err = _publish(fleet, "tune", "svc", "ver", "ceil=3")
    assert code == 0, err
    for node in fleet.nodes:
        assert pool(node)["pool"]["ceil"] == 3
    code, _, err = _publish(fleet, "disable", "svc")
    assert code == 0, err
    for node in fleet.nodes:
        assert requests.post(node.url("svc", "ver", "run"), json={}, timeout=30).status_code == 404
    code, _, err = _publish(fleet, "enable", "svc")
    assert code == 0, err
    current = served(fleet.nodes[0])
    assert [served(n) for n in fleet.nodes] == [current] * 3


def _assert_on(fleet: Fleet, good: str, error: str) -> None:
    for node in fleet.nodes:
        assert served(node) == good
        doc = status(node)
        assert doc["ready"] is True
        assert error in (doc["repository"]["lastError"] or ""), doc["repository"]


def test_failing_test_queries_leave_every_node_on_the_last_good_state(fleet: Fleet) -> None:
    good = served(fleet.nodes[0])
    version, broken = fleet.package(broken=True)
    code, doc, err = _publish(fleet, "publish", broken, "--activate")
    assert code == 1
    for node in fleet.nodes:  # each node is named, with the node's own reason
        assert f"node {node.grpc} did not converge" in err and "broken on purpose" in err
    assert [n["status"] for n in doc["nodes"]] == ["failed"] * 3  # type: ignore[attr-defined]
    _assert_on(fleet, good, f"generation {version} of svc failed test query")
    metrics = requests.get(fleet.nodes[0].http + "/metrics", timeout=10).text
    assert "apinode_repository_sync_errors_total" in metrics and "apinode_repository_failing 1.0" in metrics

    code, _, err = _publish(fleet, "rollback", "svc")  # the repository points at the good one again
    assert code == 0, err
    for node in fleet.nodes:
        assert served(node) == good and status(node)["repository"]["lastError"] is None


def test_bad_checksum_leaves_every_node_on_the_last_good_state(fleet: Fleet) -> None:
    good = served(fleet.nodes[0])
    version, pkg = fleet.package()
    ok(deploy("publish", pkg, "--repository", fleet.repository))  # stored, not active: nodes leave it
    (stored,) = (fleet.www / "packages" / "svc").glob(f"{version}-*.apz")
    stored.write_bytes(stored.read_bytes()[:-10] + b"corrupted!")  # same size, other content
    code, _, err = _publish(fleet, "activate", "svc", version)
    assert code == 1 and "sha256 mismatch" in err
    _assert_on(fleet, good, "sha256 mismatch")

    stored.write_bytes(pkg.read_bytes())  # repaired: the nodes' retries succeed
    for node in fleet.nodes:
        node.wait_for(lambda n=node: status(n)["repository"]["lastError"] is None, timeout=90, what="a retry")
        assert served(node) == version


def test_an_unreadable_state_leaves_every_node_on_the_last_good_state(fleet: Fleet) -> None:
    good = served(fleet.nodes[0])
    state = fleet.www / "state.json"
    original = state.read_bytes()
    state.write_bytes(b'{"format": 1, "services": {"svc": ')  # cut short
    try:
        for node in fleet.nodes:
            node.wait_for(lambda n=node: "not JSON" in (status(n)["repository"]["lastError"] or ""), what="the error")
        _assert_on(fleet, good, "not JSON")
    finally:
        state.write_bytes(original + b" ")  # the same state, as a new file version
    for node in fleet.nodes:
        node.wait_for(lambda n=node: status(n)["repository"]["lastError"] is None, timeout=90, what="recovery")
        assert served(node) == good


def test_a_node_started_later_serves_the_current_state_before_it_is_ready(fleet: Fleet) -> None:
    current = served(fleet.nodes[0])
    node = fleet.start(f"late{len(fleet.nodes)}")
    seen = wait_ready(node)
    assert served(node) == current  # at the first 200 of /ready
    print(f"\n/ready before the late node's first sync: {seen[:-1][:5]}... then 200")
    assert status(node)["repository"]["synced"] is True


def test_wait_names_a_node_that_does_not_converge(fleet: Fleet) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends: refused
    r = deploy(
        "enable", "svc", "--repository", fleet.repository, "--wait", "--nodes", f"{fleet.nodes[0].grpc},{dead}",
        "--admin-key", KEY, "--wait-timeout", "3",
    )  # fmt: skip
    assert r.returncode == 1
    assert f"node {dead} did not converge: timed out after 3 s" in r.stderr
    assert f"node {fleet.nodes[0].grpc} did not converge" not in r.stderr

    # The same node found through DNS (localhost has one A record: 127.0.0.1).
    port = fleet.nodes[0].grpc_port
    r = deploy(
        "enable", "svc", "--repository", fleet.repository, "--wait", "--nodes-dns", f"localhost:{port}",
        "--admin-key", KEY, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [(n["target"], n["status"]) for n in json.loads(r.stdout)["nodes"]] == [(f"127.0.0.1:{port}", "ok")]
