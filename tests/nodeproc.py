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

from tests.nodeclient import RUNNING, NodeClient

APINODE = str(Path(sys.executable).parent / "apinode")


@dataclass
class NodeProc(NodeClient):
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    http_port: int
    grpc_port: int
    args: Sequence[str] = ()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def given_admin_key(self) -> str | None:
        args = list(self.args)
        return args[args.index("--admin-key") + 1] if "--admin-key" in args else None

    def running(self) -> bool:
        return self.proc.poll() is None

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
    RUNNING[node.grpc] = node
    return node


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
