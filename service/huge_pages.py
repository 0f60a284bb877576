"""Put the serving process's heap on transparent huge pages, where the kernel only gives them
to memory that asks (`madvise`, the default of many distributions).

ONNX Runtime's weights and activations come from glibc's malloc. On 4 KiB pages a model's
working set misses the TLB often, and how well it shares the caches depends on which physical
pages a process happened to get: identical server processes ran 5-8 % apart. With glibc's
tunable `glibc.malloc.hugetlb=1` malloc advises huge pages for the memory it maps, and the
server ran 1-5 % faster, its processes closer together (docs/benchmarks.md).

glibc reads GLIBC_TUNABLES once, when a process starts, so `serve` starts itself again (the
same pid, command line and environment, plus the tunable) before it does anything else.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(mode_file: Path = THP_MODE_FILE) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), or None."""
    try:
        text = mode_file.read_text()
    except OSError:
        return None
    chosen = [word[1:-1] for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else None


def environment_with_huge_pages(
    environ: Mapping[str, str], mode: str | None, libc: str
) -> dict[str, str] | None:
    """`environ` plus the tunable, or None when starting again would change nothing: not
    glibc, a kernel mode other than `madvise` (`always` already backs the heap, `never`
    refuses), or GLIBC_TUNABLES already naming the tunable (the operator's choice, even 0)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if libc != "glibc" or mode != "madvise":
        return None
    if any(item.partition("=")[0] == TUNABLE for item in tunables.split(":")):
        return None
    added = f"{TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{added}" if tunables else added}


def restart_with_huge_pages() -> None:
    """Replace this process with the same command under the tunable, when that changes
    anything; return otherwise. Call it first thing in a command's entry point: nothing that
    was done before it survives."""
    environ = environment_with_huge_pages(os.environ, thp_mode(), platform.libc_ver()[0])
    if environ is None or not sys.executable or not sys.orig_argv:
        return  # nothing to gain, or an embedded interpreter with no command to start again
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError as exc:  # serve on 4 KiB pages rather than not at all
        log.warning("could not start again with %s=1 (%s); serving without it", TUNABLE, exc)
