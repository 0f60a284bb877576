"""Batching concurrent decodes: one `decode_batch` call at a time, each waiter gets its own
result or the batch's error, and a lone item is decoded at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.runtime.decode.coalescer import DecodeCoalescer


def test_coalescer_failure_reaches_every_waiter() -> None:
    def boom(items: list[bytes]) -> list[object]:
        time.sleep(0.01)
        raise RuntimeError("decoder gone")

    coalescer = DecodeCoalescer(boom, max_batch=4)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(coalescer.submit, b"x") for _ in range(12)]
    for future in futures:
        with pytest.raises(RuntimeError, match="decoder gone"):
            future.result()


def test_coalescer_wrong_result_count_is_an_error() -> None:
    coalescer = DecodeCoalescer(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        coalescer.submit(b"x")


def test_lone_decode_is_not_delayed() -> None:
    """A lone item is decoded on its own thread at once, in a batch of one."""
    calls: list[list[bytes]] = []

    def upper(items: list[bytes]) -> list[bytes]:
        calls.append(items)
        return [item.upper() for item in items]

    coalescer = DecodeCoalescer(upper)
    assert coalescer.submit(b"abc") == b"ABC"
    assert calls == [[b"abc"]]
    assert [len(batch) for batch in calls] == [1]
