"""A private PostgreSQL server for the tests: Debian's `postgresql` package (installed by
tests/setup_services.sh), one cluster per test process (pytest-xdist workers each get
their own), in a temporary directory, on a free loopback port, with password auth.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user
(`runuser`), and its directory belongs to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

USER = "apinode"
PASSWORD = "pg-s3cret-for-tests"
DATABASE = "apitest"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `bash tests/setup_services.sh` (make test does)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgServer:
    root: Path
    port: int
    bindir: Path
    as_user: list[str]

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", "immediate"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PgServer:
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="apinode-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PgServer(root, _free_port(), bindir, as_user)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD)
    if as_user:
        shutil.chown(pwfile, "postgres")
    data = str(root / "data")
    try:
        server._run(
            str(bindir / "initdb"), "-D", data, "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
            "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        options = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        server._run(str(bindir / "pg_ctl"), "start", "-D", data, "-w", "-l", str(root / "log"), "-o", options)
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()}\n{log}") from None
    with psycopg.connect(server.dsn.replace(f"/{DATABASE}", "/postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return server
