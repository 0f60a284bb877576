"""The CPU gate: no more threads than its width at once, waiting work earliest deadline first,
a wide hold never starved; and the server's decode and CPU runs take their turns in it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelkit import colour_model, publish, solid_png

from service.cpus import usable_cores
from service.runtime.classifier import OnnxClassifier
from service.runtime.cpu_gate import CpuGate
from service.settings import ServiceSettings

SIZE = (16, 16)


def wait_until(condition: Callable[[], bool]) -> None:
    """Spin until `condition` holds (other threads are getting there); a hang guard only."""
    stop = threading.Event()
    for _ in range(100_000):
        if condition():
            return
        stop.wait(0.001)
    raise AssertionError("condition never held")


class Holder:
    """Holds room in a gate from its own thread until `release()`; records when it got in."""

    def __init__(self, gate: CpuGate, threads: int, deadline: float, log: list[str], name: str):
        self.entered = threading.Event()
        self._release = threading.Event()

        def hold() -> None:
            with gate.hold(threads, deadline):
                log.append(name)
                self.entered.set()
                assert self._release.wait(30), "the test never released it"

        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)


def test_waiting_work_starts_earliest_deadline_first_then_in_arrival_order() -> None:
    gate, log = CpuGate(1), []
    first = Holder(gate, 1, 0.0, log, "first")
    assert first.entered.wait(30)
    waiting: dict[str, Holder] = {}
    for name, deadline in [("late", 9.0), ("urgent", 1.0), ("middle", 5.0), ("middle2", 5.0)]:
        waiting[name] = Holder(gate, 1, deadline, log, name)
        count = len(waiting)
        wait_until(lambda: gate.waiting == count)  # noqa: B023 (called before the next turn)
    first.release()
    for name in ["urgent", "middle", "middle2", "late"]:
        assert waiting[name].entered.wait(30)
        waiting[name].release()
    assert log == ["first", "urgent", "middle", "middle2", "late"]


def test_a_wide_hold_is_not_starved_by_narrow_work_behind_it() -> None:
    gate, log = CpuGate(2), []
    a, b = Holder(gate, 1, 0.0, log, "a"), Holder(gate, 1, 0.0, log, "b")
    assert a.entered.wait(30) and b.entered.wait(30)
    wide = Holder(gate, 2, 1.0, log, "wide")
    wait_until(lambda: gate.waiting == 1)
    narrow = Holder(gate, 1, 2.0, log, "narrow")
    wait_until(lambda: gate.waiting == 2)
    a.release()  # one thread's room is free, but the wide hold ahead needs two
    assert gate.waiting == 2 and not narrow.entered.is_set()
    b.release()
    assert wide.entered.wait(30)
    assert gate.waiting == 1 and not narrow.entered.is_set()
    wide.release()
    assert narrow.entered.wait(30)
    narrow.release()
    assert log == ["a", "b", "wide", "narrow"]


def test_never_more_threads_than_its_width() -> None:
    gate, lock = CpuGate(3), threading.Lock()
    inside, most = 0, 0

    def work(threads: int, deadline: float) -> None:
        nonlocal inside, most
        with gate.hold(threads, deadline):
            with lock:
                inside += min(threads, gate.width)
                most = max(most, inside)
            threading.Event().wait(0.0005)
            with lock:
                inside -= min(threads, gate.width)

    rng = np.random.default_rng(0)
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(work, int(rng.integers(1, 5)), float(rng.random())) for _ in range(300)]
        for job in jobs:
            job.result(30)
    assert most <= 3 and inside == 0 and gate.waiting == 0


def test_call_gives_the_room_back_when_the_work_fails() -> None:
    gate = CpuGate(1)
    assert gate.call(1, 0.0, max, 2, 7) == 7
    with pytest.raises(ZeroDivisionError):
        gate.call(1, 0.0, lambda: 1 / 0)
    assert gate.call(4, 0.0, len, "room") == 4  # wider than the gate: takes all of it


def test_a_gate_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CpuGate(0)


def classifier(gate: CpuGate | None, threads: int = 1, **settings: Any) -> OnnxClassifier:
    model = colour_model(SIZE, sharpness=0.05)
    config = ServiceSettings(use_cuda=False, intra_op_threads=threads, **settings)
    return OnnxClassifier(model, SIZE, 3, config, instances=2, cpu_gate=gate)


def test_a_cpu_run_waits_for_its_turn_in_the_gate() -> None:
    gate, log = CpuGate(1), []
    model = classifier(gate)
    holder = Holder(gate, 1, 0.0, log, "older work")
    assert holder.entered.wait(30)
    images = np.zeros((2, *SIZE, 3), dtype=np.uint8)
    with ThreadPoolExecutor(1) as pool:
        run: Future[np.ndarray] = pool.submit(model.run, images, False, 5.0)
        wait_until(lambda: gate.waiting == 1)
        assert not run.done()
        holder.release()
        assert run.result(30).shape == (2, 3)
    assert gate.waiting == 0


def test_batches_on_one_thread_cpu_slots_are_capped() -> None:
    assert classifier(None, cpu_max_batch_size=4).batch_limit(32) == 4
    assert classifier(None, cpu_max_batch_size=4).batch_limit(2) == 2
    assert classifier(None, threads=2, cpu_max_batch_size=4).batch_limit(32) == 32


async def test_a_request_decodes_only_in_its_turn_in_the_app_gate(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1)
    roost = await start_app(repo, cpu_gate_threads=1)
    await roost.wait_ready()
    state = roost.app.state.roost
    assert state.cpu_gate.width == 1
    assert state.registry.get("colours").artifacts.classifier.cpu_gate is state.cpu_gate
    holder = Holder(state.cpu_gate, 1, 0.0, [], "older work")
    assert holder.entered.wait(30)
    answer = asyncio.create_task(
        roost.client.post("/v1/classify", files={"file": ("red.png", solid_png((250, 10, 10)))})
    )
    await asyncio.to_thread(wait_until, lambda: state.cpu_gate.waiting == 1)  # the decode
    assert not answer.done()
    holder.release()
    response = await answer
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"][0]["label"] == "red"


async def test_the_app_gate_has_a_place_per_core_plus_one_by_default(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1)
    roost = await start_app(repo)
    assert roost.app.state.roost.cpu_gate.width == usable_cores() + 1
