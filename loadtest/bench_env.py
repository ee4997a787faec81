"""What the benchmark suite needs from the machine and from a running node.

Cores: servers go on core 0 (a ``taskset -c 0`` prefix, which the node's workers inherit),
generators on the others. Processes: :func:`started` runs a server until its ports file
appears and stops it after. The node: its pool settings, its pids, and its own counters
(``GET /admin/status``), which say what it did with the load whatever the generator saw:
an h2load run counts every HTTP 200, and only the node knows which calls it rejected.
Memory: resident (RSS) and proportional (PSS: shared pages split between the processes
that map them, so the node and its workers add up honestly) from ``/proc``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_COUNTERS = ("served", "rejected", "timed_out", "cancelled", "crashed", "failed", "batches", "batched_rows")
# Node-wide: of the refusals, those decided from a request's bytes, before aiohttp parsed it.
_UNPARSED = "refused_unparsed"


def cores() -> tuple[list[str], tuple[int, ...] | None]:
    """The taskset prefix for servers and the CPUs for generators (with 2+ cores)."""
    n = os.cpu_count() or 1
    if n < 2 or shutil.which("taskset") is None:
        return [], None
    return ["taskset", "-c", "0"], tuple(range(1, n))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    meminfo = Path("/proc/meminfo")
    mem = meminfo.read_text().split("\n")[0].split(":", 1)[-1].strip() if meminfo.exists() else ""
    n = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "cores": n,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "pinning": "servers on core 0, generators on cores 1+" if n > 1 else "none (1 core)",
    }


@contextmanager
def started(cmd: list[str], ports: Path, log: Path, wait: float = 120.0) -> Iterator[dict[str, int]]:
    """Runs ``cmd`` until it writes ``ports`` (JSON), yields them, then stops it (SIGTERM)."""
    ports.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + wait
        while not ports.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd[:6])} did not start; see {log}")
            time.sleep(0.05)
        info = json.loads(ports.read_text())
        info.setdefault("pid", proc.pid)
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, all threads) the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(pids: list[int], measure: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``measure``, with the CPU the server processes spent meanwhile, per answer served.

    Unlike throughput, this does not depend on the share of its core a server got: on a
    shared machine the scheduler splits a core per runnable thread, so a node of two busy
    processes takes more of core 0 from other jobs than a one-process floor does. Only
    meaningful for a tool that counts every request it sent (no unmeasured warmup).
    """

    def measured() -> dict[str, Any]:
        before = cpu_seconds(pids)
        row = measure()
        spent = cpu_seconds(pids) - before
        row["server_cpu_s"] = round(spent, 3)
        row["server_cpu_us_per_req"] = round(spent / row["ok"] * 1e6, 1) if row.get("ok") else None
        return row

    return measured


# The benchmark's nodes take this admin key (bench_runs.node_cmd): their admin plane is
# closed without one, and /admin/status is how the benchmark reads the pools.
BENCH_ADMIN_KEY = secrets.token_urlsafe(24)


def _status(http: str) -> dict[str, Any]:
    req = urllib.request.Request(http + "/admin/status", headers={"Authorization": f"Bearer {BENCH_ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _endpoints(status: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for service, svc in status.get("services", {}).items():
        for gen in svc.get("generations", {}).values():
            for endpoint, st in gen.items():
                yield service, endpoint, st


def pool_of(http: str, service: str, endpoint: str) -> dict[str, Any]:
    for s, e, st in _endpoints(_status(http)):
        if (s, e) == (service, endpoint):
            return dict(st.get("pool", {}))
    return {}


def workers_of(http: str, service: str, endpoint: str) -> dict[str, Any]:
    """The endpoint's workers as /admin/status shows them (total, busy, idle, pids...)."""
    for s, e, st in _endpoints(_status(http)):
        if (s, e) == (service, endpoint):
            return dict(st.get("workers", {}))
    return {}


def node_pids(http: str, node_pid: int) -> dict[str, list[int]]:
    """The front process and every worker, by endpoint."""
    pids: dict[str, list[int]] = {"node": [node_pid]}
    for s, e, st in _endpoints(_status(http)):
        pids[f"{s}/{e}"] = [int(p) for p in st.get("workers", {}).get("pids", [])]
    return pids


def _kb(pid: int, field: str, path: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{path}").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def memory(pids: dict[str, list[int]]) -> dict[str, Any]:
    """RSS and PSS in MB of the front process and of the workers (summed, and per endpoint)."""

    def mb(group: list[int], field: str, path: str) -> float:
        return round(sum(_kb(p, field, path) for p in group) / 1024, 1)

    workers = [p for k, group in pids.items() if k != "node" for p in group]
    return {
        "node_rss": mb(pids["node"], "VmRSS", "status"),
        "node_pss": mb(pids["node"], "Pss", "smaps_rollup"),
        "workers_rss": mb(workers, "VmRSS", "status"),
        "workers_pss": mb(workers, "Pss", "smaps_rollup"),
        "workers": len(workers),
        "per_endpoint_rss": {k: mb(g, "VmRSS", "status") for k, g in pids.items() if k != "node"},
    }


class Counters:
    """The node's counters for one endpoint, read around a run."""

    def __init__(self, http: str, service: str, endpoint: str) -> None:
        self._http, self._service, self._endpoint = http, service, endpoint
        self._mark = self._read()
        self._first = dict(self._mark)

    def _read(self) -> dict[str, int]:
        status = _status(self._http)
        out = dict.fromkeys(_COUNTERS, 0)
        for s, e, st in _endpoints(status):
            if (s, e) == (self._service, self._endpoint):
                out = {k: int(st.get(k) or 0) for k in _COUNTERS}
        out[_UNPARSED] = int((status.get("http") or {}).get("refusedUnparsed") or 0)
        return out

    def mark(self) -> None:
        self._mark = self._read()

    def delta(self) -> dict[str, int]:
        """What the node counted since :meth:`mark` (only what changed)."""
        now = self._read()
        return {k: now[k] - self._mark[k] for k in (*_COUNTERS, _UNPARSED) if now[k] != self._mark[k]}

    def around(self, measure: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """``measure``, with what the node counted meanwhile in the row's ``node_side``, and
        how many requests each model run took on average (``requests_per_run``: above 1,
        the node batched requests that were waiting together)."""

        def measured() -> dict[str, Any]:
            self.mark()
            row = measure()
            side = self.delta()
            row["node_side"] = side
            served = side.get("served", 0)
            runs = side.get("batches", 0) + served - side.get("batched_rows", 0)
            row["requests_per_run"] = round(served / runs, 2) if runs > 0 else None
            return row

        return measured

    def total(self) -> dict[str, int]:
        now = self._read()
        return {k: now[k] - self._first[k] for k in _COUNTERS}
