"""A repository behind a plain HTTP server that sends no ETag and no Last-Modified (a
bucket proxy, a minimal static server): every poll gets the whole state file back. The
node must treat the same bytes as no change: converge once, not at every poll, and keep
the back-off of a failing sync instead of retrying it at every poll."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.deployer.conftest import deploy, make_package, ok
from tests.nodeproc import run_node
from tests.repository.helpers import KEY, served, status, wait_ready


class _Plain(BaseHTTPRequestHandler):
    root: Path
    gets: list[str]

    def do_GET(self) -> None:  # http.server calls it by this name
        self.gets.append(self.path)
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_response(404)
            self.end_headers()
            return
        body = path.read_bytes()
        self.send_response(200)  # no ETag, no Last-Modified: nothing to make a GET conditional
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "repo"
    root.mkdir()
    gets: list[str] = []
    handler = type("Handler", (_Plain,), {"root": root, "gets": gets})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, gets
    finally:
        server.shutdown()
        server.server_close()


def _metric(node_http: str, name: str) -> float:
    text = requests.get(node_http + "/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def test_the_same_state_bytes_are_no_change(tmp_path: Path, plain: tuple[str, Path, list[str]]) -> None:
    url, root, gets = plain
    ok(deploy("publish", make_package(tmp_path / "pkgs", "v1"), "--repository", root, "--activate"))
    with run_node(tmp_path / "node", args=["--admin-key", KEY, "--repository", url, "--poll-seconds", "0.2"]) as node:
        wait_ready(node)
        assert served(node) == "v1"
        polls = len(gets)
        node.wait_for(lambda: gets.count("/state.json") >= polls + 5, what="five more polls")
        assert _metric(node.http, "apinode_repository_syncs_total") == 1  # converged once, not per poll

        ok(deploy("publish", make_package(tmp_path / "pkgs", "v2"), "--repository", root, "--activate"))
        node.wait_for(lambda: served(node) == "v2", what="v2 served")  # a real change is still seen
        assert _metric(node.http, "apinode_repository_syncs_total") == 2


def test_a_failing_sync_backs_off(tmp_path: Path, plain: tuple[str, Path, list[str]]) -> None:
    url, root, gets = plain
    ok(deploy("publish", make_package(tmp_path / "pkgs", "v1"), "--repository", root, "--activate"))
    for apz in root.rglob("*.apz"):
        apz.write_bytes(b"not the published package")  # every download fails its checksum
    with run_node(tmp_path / "node", args=["--admin-key", KEY, "--repository", url, "--poll-seconds", "0.2"]) as node:
        node.wait_for(lambda: status(node)["repository"]["lastError"] is not None, what="a failed sync")
        time.sleep(4)
        downloads = [g for g in gets if g.endswith(".apz")]
        polls = gets.count("/state.json")
        # Retries at 0.2, 0.4, 0.8, 1.6, 3.2 s after each failure: at most 5 or so in 4 s,
        # where a poll every 0.2 s that forgot its failures would download 20 times.
        assert polls >= 15 and len(downloads) <= 7, (polls, len(downloads))
        assert "sha256 mismatch" in status(node)["repository"]["lastError"]
