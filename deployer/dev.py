"""`apinode dev DIR`: edit a service folder and see it served, live.

Compiles the folder, starts a local node (a subprocess), pushes the package and activates
it, and prints what its test queries answered. Then it watches the folder (a scan every
0.5 s; __pycache__, hidden folders and the build output are ignored): on every change it
rebuilds and pushes the new package as a new generation (`<version>-devN`), which the node
hot-swaps in without dropping a request. A broken edit (compile error, failed test query)
prints its error and the last good generation keeps serving. Ctrl-C stops the node.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.markup import escape

from apz.archive import write_package
from apz.vocab import MANIFEST
from deployer.client import AdminClient
from deployer.errors import DeployError, UsageError
from deployer.localkey import local_admin_key
from deployer.output import Output, tests_summary, tests_table
from deployer.packagefile import open_package, verb_of

_IGNORED_DIRS = {"__pycache__", "node_modules", "build", "dist"}
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", ".tmp", "~")
KEEP_DEV_GENERATIONS = 3


def apinode_command() -> list[str]:
    exe = Path(sys.executable).parent / "apinode"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "node.cli"]


def build_command(folder: Path, out: Path, template: str | None) -> list[str]:
    """The command that turns the folder into a package at `out`."""
    if template:
        return [t.format(src=folder, out=out) for t in shlex.split(template)]
    if importlib.util.find_spec("compiler.__main__") is not None:
        return [sys.executable, "-m", "compiler", "compile", str(folder), "-o", str(out)]
    return [*apinode_command(), "compile", str(folder), "-o", str(out)]


def snapshot(folder: Path, ignore: list[Path]) -> dict[str, tuple[int, int]]:
    """Path -> (mtime, size) of every source file of the folder."""
    skip = {p.resolve() for p in ignore}
    state: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(folder):
        rootp = Path(root)
        dirs[:] = [
            d for d in dirs if d not in _IGNORED_DIRS and not d.startswith(".") and (rootp / d).resolve() not in skip
        ]
        for name in files:
            if name.startswith((".", "#")) or name.endswith(_IGNORED_SUFFIXES):
                continue
            path = rootp / name
            if path.resolve() in skip:
                continue
            with contextlib.suppress(OSError):  # deleted between the listing and the stat
                st = path.stat()
                state[str(path.relative_to(folder))] = (st.st_mtime_ns, st.st_size)
    return state


def restamp(package: Path, version: str) -> None:
    """Rewrites a package under another version (a distinct generation on the node)."""
    with zipfile.ZipFile(package) as z:
        manifest = json.loads(z.read(MANIFEST))
        files: dict[str, bytes | Path] = {n: z.read(n) for n in z.namelist() if n != MANIFEST and not n.endswith("/")}
    manifest["version"] = version
    manifest.pop("files", None)
    write_package(package, manifest, files)


class _NodeProcess:
    """The local node: `apinode serve` in its own session, so Ctrl-C reaches us first."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, ports_file: Path) -> None:
        cmd = [*apinode_command(), "serve", "--data-dir", str(data_dir)]
        cmd += ["--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port)]
        cmd += ["--ports-file", str(ports_file)]
        self.log: IO[bytes] | None = open(args.node_log, "ab") if args.node_log else None
        self.ports_file = ports_file
        ports_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env, start_new_session=True)

    def wait_ports(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.ports_file.exists():
            if self.proc.poll() is not None:
                raise DeployError(f"the node exited with code {self.proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise DeployError(f"the node did not start in {timeout:g} s")
            time.sleep(0.05)
        ports: dict[str, Any] = json.loads(self.ports_file.read_text())
        return ports

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        return self.proc.returncode


class DevLoop:
    def __init__(self, args: argparse.Namespace, out: Output, work: Path) -> None:
        self.args = args
        self.out = out
        self.folder: Path = args.folder.resolve()
        self.data_dir: Path = (args.data_dir or work / "data").resolve()
        self.package: Path = (args.out or work / "build" / f"{self.folder.name}.apz").resolve()
        self.ports_file: Path = (args.ports_file or work / "ports.json").resolve()
        self.node = _NodeProcess(args, self.data_dir, self.ports_file)
        self.client: AdminClient | None = None
        self.counter = 0
        self.good: str | None = None  # the generation serving, from the last good build

    def _ignored(self) -> list[Path]:
        return [self.package, self.data_dir, self.ports_file]

    def start(self) -> None:
        ports = self.node.wait_ports()
        # The node inherits our environment, and with it $APINODE_ADMIN_KEY if set; else it
        # generated a key into its data dir before it wrote its ports.
        target = f"127.0.0.1:{ports['grpc']}"
        key = os.environ.get("APINODE_ADMIN_KEY") or local_admin_key(self.data_dir, target)
        self.client = AdminClient(target, key, timeout=300.0)
        self.http = f"http://127.0.0.1:{ports['http']}"
        self.out.note(
            f"node serving on {self.http} and gRPC 127.0.0.1:{ports['grpc']} (data dir {escape(str(self.data_dir))})"
        )

    def build_and_deploy(self) -> bool:
        """One cycle: build, restamp, push with activate. False when the edit is broken."""
        assert self.client is not None
        self.package.parent.mkdir(parents=True, exist_ok=True)
        self.package.unlink(missing_ok=True)  # never push a stale package as this build's
        cmd = build_command(self.folder, self.package, self.args.build_cmd)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            text = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()
            self.out.error("build failed:\n  " + "\n  ".join(text[-15:]), "apinode dev")
            return False
        try:
            pkg = open_package(self.package)
        except UsageError as exc:
            self.out.error(f"build produced no usable package: {exc.message}", "apinode dev")
            return False
        version = self._next_version(pkg.service, pkg.version)
        restamp(self.package, version)
        pkg = open_package(self.package)
        built = time.perf_counter() - t0
        try:
            result = self.client.push(pkg, activate=True)
        except DeployError as exc:
            self.out.error(exc.message, "apinode dev")
            return False
        if result.tests:
            self.out.show(tests_table(result.tests, f"test queries of {version}"))
        first = self.good is None
        self.good = version
        self.out.note(
            f"[green]serving {pkg.service} {version}[/] (built in {built:.1f} s; {tests_summary(result.tests)})"
        )
        if first:
            for eid, ep in pkg.manifest.endpoints.items():
                self.out.note(f"  POST {self.http}/public/api/v1/{pkg.service}/{eid}/{verb_of(ep.type)}")
        self._prune(pkg.service)
        return True

    def _next_version(self, service: str, base: str) -> str:
        assert self.client is not None
        if self.counter == 0:  # continue after what a previous session left in the data dir
            state = self.client.find_service(service)
            pattern = re.compile(rf"{re.escape(base)}-dev(\d+)")
            seen = [
                int(m.group(1)) for g in (state.generations if state else ()) if (m := pattern.fullmatch(g.generation))
            ]
            self.counter = max(seen, default=0)
        self.counter += 1
        return f"{base}-dev{self.counter}"

    def _prune(self, service: str) -> None:
        """Deletes old dev generations (keeps the last few, for rollback)."""
        assert self.client is not None
        with contextlib.suppress(DeployError):  # housekeeping only
            state = self.client.service(service)
            old = [g.generation for g in state.generations if "-dev" in g.generation and not g.active]
            for generation in old[: max(0, len(old) - (KEEP_DEV_GENERATIONS - 1))]:
                self.client.delete_generation(service, generation)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return snapshot(self.folder, self._ignored())

    def watch(self, seen: dict[str, tuple[int, int]]) -> None:
        """Rebuilds on every change after `seen` (taken before the last build, so an edit
        saved while it ran is not lost)."""
        interval = self.args.interval
        while True:
            time.sleep(interval)
            if self.node.proc.poll() is not None:
                raise DeployError(f"the node exited with code {self.node.proc.returncode}")
            now = self.snapshot()
            if now == seen:
                continue
            while True:  # let an editor finish writing (several files, several steps)
                time.sleep(interval)
                settled = self.snapshot()
                if settled == now:
                    break
                now = settled
            changed = sorted(set(now.items()) ^ set(seen.items()))
            names = sorted({name for name, _ in changed})
            shown = escape(", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
            self.out.note(f"changed: {shown}: rebuilding")
            seen = now
            if not self.build_and_deploy() and self.good:
                self.out.note(f"[yellow]still serving {self.good}[/]")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        code = self.node.stop()
        self.out.note(f"node stopped (exit code {code})")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_dev(args: argparse.Namespace, out: Output) -> int:
    if not args.folder.is_dir():
        raise UsageError(f"no such folder: {args.folder}")
    work = Path(tempfile.mkdtemp(prefix="apinode-dev-"))
    loop: DevLoop | None = None
    try:
        with _sigterm_interrupts():
            try:
                loop = DevLoop(args, out, work)
                loop.start()
                seen = loop.snapshot()
                if not loop.build_and_deploy():
                    out.note("[yellow]nothing serves yet: fix the folder, it rebuilds on save[/]")
                out.note(f"watching {escape(str(loop.folder))} (Ctrl-C stops)")
                loop.watch(seen)
            except KeyboardInterrupt:
                out.note("stopping")
            finally:
                if loop is not None:
                    loop.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
