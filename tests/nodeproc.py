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

import grpc
import requests

APINODE = str(Path(sys.executable).parent / "apinode")


class _WithMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds fixed metadata (the admin key) to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    http_port: int
    grpc_port: int
    args: Sequence[str] = ()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        r = requests.get(self.http + "/admin/status", headers=self.admin_headers(), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def pool(self, service: str, endpoint: str, generation: str | None = None) -> dict[str, Any]:
        svc = self.status()["services"][service]
        return svc["generations"][generation or svc["active"]][endpoint]  # type: ignore[no-any-return]

    def admin_key(self) -> str | None:
        """This node's admin key: the first `--admin-key` it was started with, else the first
        of DATA_DIR/admin-keys.txt (where a node given none generates one); None for a node
        without keys (`--admin-open-loopback`)."""
        args = list(self.args)
        if "--admin-key" in args:
            return args[args.index("--admin-key") + 1]
        path = self.data_dir / "admin-keys.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return next((k.strip() for k in lines if k.strip() and not k.startswith("#")), None)

    def admin_headers(self) -> dict[str, str]:
        """HTTP headers that authorise an admin call (`/admin/...`)."""
        key = self.admin_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that authorises an Admin call."""
        key = self.admin_key()
        return (("authorization", f"Bearer {key}"),) if key else ()

    def admin_channel(self, channel: grpc.Channel) -> grpc.Channel:
        """`channel`, with this node's admin key on every call it makes."""
        return grpc.intercept_channel(channel, _WithMetadata(self.admin_metadata()))

    def admin_args(self) -> list[str]:
        """Arguments that give `apinode deploy` this node's admin key."""
        key = self.admin_key()
        return [f"--admin-key={key}"] if key else []

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
    data_dir: Path,
    *packages: Path,
    args: Sequence[str] = (),
    timeout: float = 90.0,
    nofile: int | None = None,
    cpus: set[int] | None = None,
    fsize: int | None = None,
) -> NodeProc:
    """`nofile`: the node's RLIMIT_NOFILE (soft and hard), to run it short of descriptors;
    `cpus`: the CPUs it may run on (as under `taskset -c`); `fsize`: its RLIMIT_FSIZE, the
    largest file it may write (a full disk, for one process: a longer write fails with EFBIG,
    and Python ignores SIGXFSZ). Raise it again with `resource.prlimit(node.proc.pid, ...)`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = data_dir.parent / f"{data_dir.name}.ports.json"
    ports.unlink(missing_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    log = open(log_path, "ab")
    cmd = [APINODE, "serve", "--data-dir", str(data_dir), "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--ports-file", str(ports), *args, *map(str, packages)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    preexec = None
    if nofile is not None or cpus is not None or fsize is not None:
        import resource

        def preexec() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

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
    node = NodeProc(proc, data_dir, log_path, p["http"], p["grpc"], tuple(args))
    _RUNNING[node.grpc] = node
    return node


_RUNNING: dict[str, NodeProc] = {}  # gRPC address -> the node started there (by this process)


def node_at(target: str) -> NodeProc | None:
    """The node this process started at a gRPC address, if any (its port is still its own
    while it runs: the OS gives a bound port to no one else)."""
    node = _RUNNING.get(target)
    return node if node is not None and node.proc.poll() is None else None


@contextlib.contextmanager
def run_node(
    data_dir: Path,
    *packages: Path,
    args: Sequence[str] = (),
    nofile: int | None = None,
    cpus: set[int] | None = None,
    fsize: int | None = None,
) -> Iterator[NodeProc]:
    node = start_node(data_dir, *packages, args=args, nofile=nofile, cpus=cpus, fsize=fsize)
    try:
        yield node
    finally:
        node.stop()
