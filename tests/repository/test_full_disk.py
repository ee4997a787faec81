"""A repository node whose disk fills up while it downloads a package.

The download fails with a clear error (the file, and the OS's reason) in the status
document's `repository` section and /ready, the node stays up and keeps what it had, and
once there is room again the next poll converges by itself: nothing is lost, nothing is
half-stored. The disk is "full" for the node's process only: its RLIMIT_FSIZE is below the
package's size (a write past it fails with EFBIG), then raised with prlimit(2).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import requests

from tests.deployer.conftest import deploy, make_package, ok
from tests.nodeproc import run_node
from tests.repository.helpers import KEY, served, status, wait_ready

LIMIT = 1 << 20  # the node may write files of up to 1 MiB; the package is 3 MiB


def test_a_full_disk_during_a_download_is_reported_and_recovered(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    pkg = make_package(tmp_path / "pkgs", "v1", extra={"data/noise.bin": os.urandom(3 << 20)})
    assert pkg.stat().st_size > LIMIT
    ok(deploy("publish", pkg, "--repository", repo, "--activate"))
    args = ["--admin-key", KEY, "--repository", str(repo), "--poll-seconds", "0.3"]
    with run_node(tmp_path / "node", args=args, fsize=LIMIT) as node:
        node.wait_for(lambda: status(node)["repository"]["lastError"] is not None, what="a sync error")
        error = status(node)["repository"]["lastError"]
        assert "cannot write" in error and "File too large" in error, error
        r = requests.get(node.http + "/ready", timeout=10)
        assert r.status_code == 503 and any("File too large" in why for why in r.json()["notReady"]), r.text
        assert requests.get(node.http + "/isAlive", timeout=10).status_code == 200
        assert "Traceback" not in node.log()
        leftovers = list((tmp_path / "node").rglob("repo-svc-v1-*"))
        assert leftovers == [], leftovers  # the partial download was removed

        resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_ready(node)
        assert served(node) == "v1"
        assert status(node)["repository"]["lastError"] is None
