"""Usable cores: the machine's, cut to the CPU affinity and the container's CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import cgroup_cpu_quota, usable_cores


def cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "400000 100000\n"}, 4.0),  # cgroup v2, a 4-CPU limit
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 none
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),  # no cgroup files (not Linux, or not mounted)
    ],
)
def test_the_cgroup_quota_is_read_from_v2_then_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    assert cgroup_cpu_quota(cgroup(tmp_path, files)) == quota


def test_usable_cores_follow_the_quota_rounded_up_never_past_the_machine(tmp_path: Path) -> None:
    machine = len(os.sched_getaffinity(0))
    assert usable_cores(cgroup(tmp_path / "none", {})) == machine
    assert usable_cores(cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert usable_cores(cgroup(tmp_path / "big", {"cpu.max": "6400000 100000"})) == machine
    if machine >= 2:
        assert usable_cores(cgroup(tmp_path / "one+", {"cpu.max": "100001 100000"})) == 2
