"""`prepare_server_process`: what `roost serve` and each worker set for their own process.

It changes process-wide state (the root logger, glibc's malloc), so every check runs in a
fresh interpreter.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

# Eight threads that each allocate while all are alive: glibc gives every new thread an arena
# of its own (one an ended thread left is reused) up to its limit, 8 per core by default, so
# without the cap the process ends with more than two. `malloc_stats` prints one "Arena N:"
# block per arena to stderr.
_SCRIPT = textwrap.dedent(
    """
    import ctypes, ctypes.util, logging, sys, threading
    if sys.argv[1] == "prepare":
        from service.server import prepare_server_process
        from service.settings import ServiceSettings
        prepare_server_process(ServiceSettings(log_level="debug"))
    print(logging.getLevelName(logging.getLogger().level), flush=True)
    kept, all_alive = [], threading.Barrier(8)

    def allocate():
        kept.append(bytearray(4096))
        all_alive.wait()

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
    """
)


def _run(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    arenas = sum(line.startswith("Arena ") for line in done.stderr.splitlines())
    return done.stdout.strip(), arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_prepared_process_logs_at_its_level_and_caps_malloc_arenas() -> None:
    level, arenas = _run("prepare")
    untouched_level, untouched_arenas = _run("untouched")
    assert level == "DEBUG"  # from the settings given
    assert untouched_level == "WARNING"  # Python's default: the check above could fail
    assert 1 <= arenas <= 2
    assert untouched_arenas > 2


# Large blocks freed behind small live ones: glibc's dynamic threshold (raised to 8 MiB by the
# first block freed) puts the rest on the heap, which cannot shrink past the small blocks, so
# their memory stays resident. Prints the resident MiB grown while they lived and after.
_FREED_BLOCKS_SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "prepare":
        from service.server import prepare_server_process
        from service.settings import ServiceSettings
        prepare_server_process(ServiceSettings())

    def resident_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 >> 20

    before = resident_mib()
    first = bytearray(8 << 20)
    del first
    blocks, pins = [], []
    for _ in range(40):
        block = bytearray(6 << 20)
        block[::4096] = b"x" * 1536  # one byte a page: resident
        blocks.append(block)
        pins.append(bytearray(1000))
    grown = resident_mib() - before
    del blocks
    print(grown, resident_mib() - before)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the mmap threshold is glibc's")
def test_prepared_process_gives_large_freed_blocks_back() -> None:
    def run(mode: str) -> tuple[int, int]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        done = subprocess.run(
            [sys.executable, "-c", _FREED_BLOCKS_SCRIPT, mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        grown, kept = done.stdout.split()
        return int(grown), int(kept)

    grown, kept = run("prepare")
    untouched_grown, untouched_kept = run("untouched")
    assert grown >= 200 and untouched_grown >= 200  # 240 MiB of blocks were resident
    assert kept < 50  # given back with the blocks
    assert untouched_kept >= 200  # without the threshold: the check above could fail
