"""An HTTP repository behind Basic authorization (as Artifactory or Nexus would be): the
credentials go in the URL, for the deployer and the nodes alike, and never show."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployer.conftest import deploy, make_package, ok
from tests.nginx import Nginx, start_nginx
from tests.nodeproc import run_node
from tests.repository.helpers import KEY, served, status, wait_ready

PASSWORD = "s3cret-repo-password"


@pytest.fixture
def nginx() -> Iterator[Nginx]:
    server = start_nginx({"publisher": PASSWORD})
    try:
        yield server
    finally:
        server.stop()


def test_credentials_in_the_url_reach_the_repository_and_never_show(nginx: Nginx, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkgs", "v1")
    plain = nginx.url
    with_creds = plain.replace("http://", f"http://publisher:{PASSWORD}@")
    refused = deploy("publish", pkg, "--repository", plain, "--activate")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr, refused.stderr
    published = ok(deploy("publish", pkg, "--repository", with_creds, "--activate"))
    assert PASSWORD not in published.stdout + published.stderr
    args = ["--admin-key", KEY, "--poll-seconds", "0.3"]
    with run_node(tmp_path / "node", args=[*args, "--repository", with_creds]) as node:
        wait_ready(node)
        assert served(node) == "v1"
        repo = status(node)["repository"]
        assert repo["url"] == plain and repo["lastError"] is None
        assert PASSWORD not in node.log()
    with run_node(tmp_path / "anonymous", args=[*args, "--repository", plain]) as node:
        node.wait_for(lambda: status(node)["repository"]["lastError"] is not None, what="a refused poll")
        assert "HTTP 401" in status(node)["repository"]["lastError"]
