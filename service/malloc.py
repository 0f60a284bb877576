"""Cap glibc's malloc arenas before the server starts its threads.

glibc gives each thread that allocates concurrently an arena of its own and rarely returns
their memory. With decode threads, session threads and large request bodies, that kept
~950 MiB resident after a camera-photo load test where two arenas kept ~680 MiB, at the same
throughput (docs/benchmarks.md). `MALLOC_ARENA_MAX` does the same but must be set before the
process starts; `mallopt` works from inside as long as it runs before the threads exist.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Apply the cap unless MALLOC_ARENA_MAX is set; False where libc is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the operator chose; glibc already applied it
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        log.debug("mallopt unavailable; malloc arenas left as they are")
        return False
