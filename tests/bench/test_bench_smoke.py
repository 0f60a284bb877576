"""The benchmark harness runs end to end (a smoke run: tiny load, no assertions on times)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

from bench.harness import process_cpu_seconds, process_tree, thread_cpu_seconds
from bench.run import parse_variant


@pytest.mark.slow
def test_bench_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench",
            "--model-repo",
            str(repo),
            "--model",
            "colours",
            "--out",
            str(out),
            "--concurrency",
            "1,4",
            "--rates",
            "20",
            "--requests",
            "20",
            "--seconds",
            "3",
            "--repeats",
            "1",
            "--baseline-seconds",
            "0.2",
            "--sets",
            "224px",
            "--cache",
            str(tmp_path / "cache"),
            "--variant",
            "ungated:ROOST_CPU_GATE_THREADS=64,ROOST_CPU_MAX_BATCH_SIZE=32",
    )  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]["224px"]) == {"roost", "naive", "lean", "roost:ungated"}
    assert report["variants"]["roost:ungated"]["ROOST_CPU_GATE_THREADS"] == "64"
    roost = report["results"]["224px"]["roost"]
    assert roost["c4"]["errors"] == 0 and roost["c4"]["requests"] == 20
    assert roost["c4"]["batch_histogram"]["images"] == 20
    assert "rate20" in roost
    assert set(report["decode_per_core"]) >= {"224px", "512px", "1024px", "camera"}
    assert len(report["model_alone"]) == 7
    assert set(report["model_cpu_ms"]) == {"1", "2", "4"}  # on the CPU: one-thread sessions
    assert report["ratios"]["224px/c4"]["roost_over_limit_floor"] > 0
    assert report["ratios"]["224px/c1"]["p50_over_decode_plus_single_inference"] > 0
    lean = report["results"]["224px"]["lean"]  # the CPU floor as a server
    assert lean["c4"]["errors"] == 0 and lean["c4"]["requests"] == 20
    for key in ("roost_over_lean", "lean_over_naive", "lean_over_limit_floor"):
        assert report["ratios"]["224px/c4"][key] > 0
    # A process's CPU time comes in 10 ms ticks: the lean server's 20 tiny requests may take less
    # than one. Its loop thread's comes in nanoseconds, so it may exceed the process's truncated
    # count by up to a tick over the whole level.
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    for server in ("roost", "naive", "roost:ungated"):  # the server's CPU time per image
        cell = report["results"]["224px"][server]["c1"]
        assert cell["cpu_ms_per_image"] > 0
        loop = cell["loop_cpu_ms_per_image"]  # one of its threads
        assert 0 < loop <= cell["cpu_ms_per_image"] + 2 * tick_ms / cell["requests"]
        assert report["results"]["224px"][server]["c1"]["client_cpu_ms_per_image"] >= 0
    assert report["ratios"]["224px/c1"]["cpu_per_image_roost_over_naive"] > 0
    assert report["ratios"]["224px/c4/roost:ungated"]["roost_over_naive"] > 0
    assert report["memory"]["roost_peak_rss_mib"] >= report["memory"]["roost_ready_rss_mib"] > 0


@pytest.mark.slow
def test_several_processes_per_server(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    """`--processes 2`: each server twice, every process measured in every repeat, the cell a
    median over all of them, and each process's own median beside it (their spread)."""
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    printed = run_bench(
        "bench",
        *("--model-repo", str(repo), "--model", "colours", "--out", str(out)),
        *("--concurrency", "2", "--rates", "", "--requests", "10", "--seconds", "3"),
        *("--repeats", "2", "--baseline-seconds", "0.2", "--sets", "224px"),
        *("--cache", str(tmp_path / "cache"), "--no-lean", "--processes", "2"),
    )
    report = json.loads((out / "results.json").read_text())
    assert report["processes"] == 2
    for server in ("roost", "naive"):
        cell = report["results"]["224px"][server]["c2"]
        assert cell["runs"] == 4 and cell["requests"] == 40 and cell["errors"] == 0
        assert len(cell["images_per_s_by_process"]) == 2
        assert min(cell["images_per_s_by_process"]) <= cell["images_per_s"]
        assert cell["images_per_s"] <= max(cell["images_per_s_by_process"])
    assert printed.count("  processes ") == 2  # one line per server and level


def test_process_cpu_seconds_counts_every_thread() -> None:
    before = process_cpu_seconds(os.getpid())
    spun = threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.2  # CPU time, not wall time: holds on a busy machine
        while time.thread_time() < end:
            pass
        spun.set()

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join()
    assert spun.is_set() and process_cpu_seconds(os.getpid()) - before >= 0.15


def test_thread_cpu_seconds_counts_one_thread_finer_than_a_tick() -> None:
    """The event loop's CPU time: a thread that ran for 2 ms reads more than 0, and work on
    another thread does not count."""
    own = threading.get_native_id()
    spun_ns: list[int] = []
    before = thread_cpu_seconds(os.getpid(), own)

    def spin() -> None:
        start = time.thread_time_ns()
        while time.thread_time_ns() - start < 50_000_000:
            pass
        spun_ns.append(time.thread_time_ns() - start)

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join()
    mine_while_it_spun = thread_cpu_seconds(os.getpid(), own) - before
    assert spun_ns and mine_while_it_spun < 0.04  # not the other thread's 50 ms
    start = time.thread_time()
    while time.thread_time() - start < 0.002:
        pass
    assert thread_cpu_seconds(os.getpid(), own) - before >= 0.002


def test_process_tree_finds_children_and_grandchildren() -> None:
    """What sums a server's CPU and memory over its worker processes (ROOST_WORKERS)."""
    grandchild = "import time; time.sleep(30)"
    child = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
        "print(p.pid, flush=True); time.sleep(30)"
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        grandchild_pid = int(process.stdout.readline())
        assert process_tree(process.pid) == [process.pid, grandchild_pid]
    finally:
        for pid in process_tree(process.pid)[::-1]:
            os.kill(pid, signal.SIGKILL)
        process.wait()


def test_variant_names_a_roost_server_and_its_settings() -> None:
    assert parse_variant("before:ROOST_A=1,ROOST_B=x=y") == (
        "roost:before",
        {"ROOST_A": "1", "ROOST_B": "x=y"},
    )
    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(":ROOST_A=1")
