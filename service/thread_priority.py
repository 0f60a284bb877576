"""Lower the scheduling priority of the calling thread (Linux), for the decode pool's threads.

Decoding serves requests that arrived later than the images already waiting for or running in
a session; at equal priority the two share the cores and later requests overtake earlier ones.
A positive niceness on the decode threads lets the sessions finish the older work first, while
decode still gets every cycle they leave. Raising one's own niceness needs no privilege; it is
per thread on Linux only (elsewhere it would apply to the whole process, so nothing is done).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)


def lower_thread_priority(niceness: int) -> None:
    """Add `niceness` to the calling thread's nice value (0: leave it)."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + niceness))
    except OSError as exc:  # e.g. a seccomp profile that forbids it: run at normal priority
        log.warning("could not lower the decode threads' priority: %s", exc)
