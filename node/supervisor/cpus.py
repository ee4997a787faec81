"""The node's CPU budget: how many CPUs its processes may keep busy at once.

The smaller of the CPUs the node may run on (its affinity: `taskset`, a cpuset) and its
cgroup CPU quota rounded up (a container's `--cpus`: cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`). The parsers are pure (a root directory in, a
number out) so that they are tested on fake files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CpuBudget:
    cpus: int  # the budget: at least 1
    affinity: int  # CPUs in the node's affinity mask
    quota: float | None  # the cgroup quota in CPUs (None: none)
    source: str  # where the budget comes from, for /admin/status

    def to_json(self) -> dict[str, object]:
        return {"cpus": self.cpus, "affinity": self.affinity, "quota": self.quota, "source": self.source}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and its v1 `cpu` controller path, from the text of
    /proc/self/cgroup (`0::/path` for v2; `N:cpu,cpuacct:/path` for v1)."""
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(root: Path, path: str | None) -> list[Path]:
    """The process's own cgroup directory and its ancestors up to `root` (inside a
    container the process's path is often not mounted as such: then `root` itself)."""
    dirs: list[Path] = []
    if path:
        p = Path(path.lstrip("/"))
        while True:
            d = root / p
            if d.is_dir():
                dirs.append(d)
            if p == p.parent:
                break
            p = p.parent
    if root not in dirs:
        dirs.append(root)
    return dirs


def v2_quota(root: Path, path: str | None) -> float | None:
    """The tightest `cpu.max` (`QUOTA PERIOD` or `max PERIOD`) on the way up, in CPUs."""
    best: float | None = None
    for d in _candidates(root, path):
        text = _read(d / "cpu.max")
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            best = quota / period if best is None else min(best, quota / period)
    return best


def v1_quota(root: Path, path: str | None) -> float | None:
    """The tightest `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1: none), in CPUs."""
    best: float | None = None
    for d in _candidates(root, path):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        try:
            q, p = int(quota or ""), int(period or "")
        except ValueError:
            continue
        if q > 0 and p > 0:
            best = q / p if best is None else min(best, q / p)
    return best


def budget(affinity: int, v2: float | None, v1: float | None) -> CpuBudget:
    quotas = [q for q in (v2, v1) if q is not None]
    quota = min(quotas) if quotas else None
    cpus = max(1, affinity)
    source = f"affinity ({affinity} CPUs)"
    if quota is not None and math.ceil(quota) < cpus:
        cpus = max(1, math.ceil(quota))
        source = f"cgroup CPU quota ({quota:g} CPUs)"
    return CpuBudget(cpus=cpus, affinity=affinity, quota=quota, source=source)


def detect(fs_root: Path = Path("/")) -> CpuBudget:
    """This process's budget (the front's; workers inherit its affinity and cgroup)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    v2_path, v1_path = cgroup_paths(_read(fs_root / "proc/self/cgroup") or "")
    cg = fs_root / "sys/fs/cgroup"
    v2 = v2_quota(cg, v2_path) if v2_path is not None else None
    v1 = None
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if v1_path is not None and (cg / name).is_dir():
            v1 = v1_quota(cg / name, v1_path)
            break
    return budget(affinity, v2, v1)


def given(n: int | None) -> CpuBudget | None:
    """`--cpu-budget N` (None: off)."""
    if n is None:
        return None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    return CpuBudget(cpus=n, affinity=affinity, quota=None, source="--cpu-budget")
