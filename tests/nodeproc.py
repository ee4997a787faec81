"""A real `apinode serve` in a subprocess, on loopback port 0, for tests.

with run_node(tmp_path, package) as node:
    requests.post(node.http + "/public/api/v1/...")
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

APINODE = str(Path(sys.executable).parent / "apinode")


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    http_port: int
    grpc_port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return requests.get(self.http + "/admin/status", timeout=10).json()  # type: ignore[no-any-return]

    def pool(self, service: str, endpoint: str, generation: str | None = None) -> dict[str, Any]:
        svc = self.status()["services"][service]
        return svc["generations"][generation or svc["active"]][endpoint]  # type: ignore[no-any-return]

    def url(self, service: str, endpoint: str, verb: str) -> str:
        return f"{self.http}/public/api/v1/{service}/{endpoint}/{verb}"

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; node log:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_node(
    data_dir: Path, *packages: Path, args: Sequence[str] = (), timeout: float = 90.0, nofile: int | None = None
) -> NodeProc:
    """`nofile`: the node's RLIMIT_NOFILE (soft and hard), to run it short of descriptors."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = data_dir.parent / f"{data_dir.name}.ports.json"
    ports.unlink(missing_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    log = open(log_path, "ab")
    cmd = [APINODE, "serve", "--data-dir", str(data_dir), "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--ports-file", str(ports), *args, *map(str, packages)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    preexec = None
    if nofile is not None:
        import resource

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
    log.close()
    deadline = time.monotonic() + timeout
    while not ports.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"node did not start in {timeout} s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)
    p = json.loads(ports.read_text())
    return NodeProc(proc, data_dir, log_path, p["http"], p["grpc"])


@contextlib.contextmanager
def run_node(
    data_dir: Path, *packages: Path, args: Sequence[str] = (), nofile: int | None = None
) -> Iterator[NodeProc]:
    node = start_node(data_dir, *packages, args=args, nofile=nofile)
    try:
        yield node
    finally:
        node.stop()
