"""The server-wide decode memory: what fits runs, what does not waits, what never fits is 413."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from modelkit import publish, solid_png
from servers import sample

from roost.contract.images import decode_bytes_bound
from service.errors import Overloaded, PayloadTooLarge
from service.serving.decode_memory import DecodeMemory


def later() -> float:
    return time.monotonic() + 60.0


def test_an_image_over_the_whole_budget_is_refused_before_it_waits() -> None:
    memory = DecodeMemory(100)
    with pytest.raises(PayloadTooLarge, match="at most 100 bytes"):
        with memory.hold(101, later()):
            pass
    assert memory.held == 0


def test_decodes_that_fit_together_run_together_and_give_their_bytes_back() -> None:
    memory = DecodeMemory(100)
    with memory.hold(60, later()), memory.hold(40, later()):
        assert memory.held == 100
    assert memory.held == 0
    with pytest.raises(RuntimeError), memory.hold(70, later()):
        raise RuntimeError("a failed decode")
    assert memory.held == 0


def test_a_decode_that_does_not_fit_waits_for_room() -> None:
    memory = DecodeMemory(100)
    first_in, second_in, release = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with memory.hold(80, later()):
            first_in.set()
            release.wait(10)

    def second() -> None:
        first_in.wait(10)
        with memory.hold(50, later()):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(10)
    assert not second_in.wait(0.05)  # 80 + 50 > 100: it waits
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_in.is_set() and memory.held == 0


def test_no_room_before_the_deadline_is_overloaded_not_the_models_fault() -> None:
    memory = DecodeMemory(100)
    with memory.hold(80, later()):
        with pytest.raises(Overloaded) as refused:
            with memory.hold(50, time.monotonic() + 0.01):
                pass
    assert not refused.value.model_fault and memory.held == 0


async def test_the_server_holds_each_images_bound_and_refuses_one_over_its_budget(
    repo: Path, start_app: Any
) -> None:
    """An image whose header says its decode can cost more than ROOST_MAX_DECODE_BYTES is 413
    before any pixel is decoded; one that fits is answered, and its bytes are given back."""
    publish(repo, "colours", 1)
    small = solid_png((250, 10, 10))
    large = solid_png((250, 10, 10), size=(3000, 3000))
    budget = decode_bytes_bound(large, (32, 32)) - 1
    assert decode_bytes_bound(small, (32, 32)) <= budget
    roost = await start_app(repo, max_decode_bytes=budget)
    await roost.wait_ready()
    headers = {"content-type": "image/png"}
    refused = await roost.client.post("/v1/classify", content=large, headers=headers)
    assert refused.status_code == 413, refused.text
    assert "ROOST_MAX_DECODE_BYTES" in refused.json()["error"]["message"]
    answered = await roost.client.post("/v1/classify", content=small, headers=headers)
    assert answered.status_code == 200, answered.text
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_decode_memory_bytes") == 0
