"""How many cores the server may use: the fewest of the machine's, its CPU affinity's and its
container's CPU limit.

`os.cpu_count()` counts the machine's cores. In a container limited to 4 CPUs on a 64-core
node it says 64, and the CPU layout built on it (the CPU gate's width, the narrow slots, the
wide session's threads, the decode threads) would start 16 times the threads the limit lets
run at once. The limit is the cgroup's CPU quota (what a Kubernetes CPU *limit* sets; a CPU
request alone sets none, so the manifests still name the thread counts).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may keep busy at once; at least 1. A fractional quota rounds up
    (2.5 CPUs: 3 threads can each get most of a core)."""
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):  # Linux
        cores = min(cores, len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs per period the cgroup may use: cgroup v2's `cpu.max` ("400000 100000" -> 4.0),
    else v1's `cpu/cpu.cfs_quota_us` / `cpu/cpu.cfs_period_us`; None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        pass
    else:
        return None if quota == "max" else _ratio(quota, period)
    try:
        quota = (root / "cpu" / "cpu.cfs_quota_us").read_text()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # v1 says -1
