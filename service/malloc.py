"""glibc's malloc set for a server before it starts its threads: two arenas, and a fixed
threshold above which blocks are mapped on their own (and given back to the system when freed).

glibc gives each thread that allocates concurrently an arena of its own and rarely returns
their memory. With decode threads, session threads and large request bodies, that kept
~950 MiB resident after a camera-photo load test where two arenas kept ~680 MiB, at the same
throughput (docs/benchmarks-journal.md).

glibc maps blocks over a threshold on their own, but raises that threshold to the size of each
mapped block freed (up to 32 MiB): after the first large request body, the next ones come from
the heap, where a refused 20 MB body's memory stays resident behind smaller live blocks. A
fixed threshold keeps every block from `MMAP_THRESHOLD_BYTES` up mapped, so what a request held
leaves with it. `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_` do the same but must be set
before the process starts; `mallopt` works from inside as long as it runs before the threads
exist, and an operator's variable wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 4 << 20
"""Above any image the server decodes at a model's size, below any large request body."""


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Apply the cap unless MALLOC_ARENA_MAX is set; False where libc is not glibc."""
    return _mallopt("MALLOC_ARENA_MAX", _M_ARENA_MAX, arenas)


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Map blocks of `nbytes` and more on their own, for good, unless MALLOC_MMAP_THRESHOLD_
    is set; False where libc is not glibc."""
    return _mallopt("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, nbytes)


def _mallopt(variable: str, option: int, value: int) -> bool:
    if variable in os.environ:
        return False  # the operator chose; glibc already applied it
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(option, value))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        log.debug("mallopt unavailable; %s left as it is", variable)
        return False
