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
