"""Decode threads run at a lower priority than the sessions (Linux), and only they do."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelkit import publish

from service.thread_priority import lower_thread_priority


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_only_the_calling_thread_is_lowered() -> None:
    base = _own_niceness()
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(3,)) as pool:
        assert pool.submit(_own_niceness).result() == min(19, base + 3)
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(0,)) as pool:
        assert pool.submit(_own_niceness).result() == base
    assert _own_niceness() == base  # the process and this thread keep theirs


async def test_the_app_decode_pool_runs_at_the_configured_niceness(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1)
    roost = await start_app(repo, decode_niceness=7)
    await roost.wait_ready()
    base = _own_niceness()
    pool = roost.app.state.roost.decode_pool
    assert pool.submit(_own_niceness).result() == min(19, base + 7)
