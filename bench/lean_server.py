"""The CPU floor as a server: the least a Python server of Roost's design can spend per image.

Run: `MODEL_DIR=model_repo/imagenet/1 uvicorn bench.lean_server:app --port 8101`.

What is left when every feature is taken away: the naive server's HTTP route (FastAPI, the
body read whole), one worker thread per core, each with a one-thread session as Roost's CPU
slots build them (`bench.cpu_floor.one_thread_session`), taking up to two waiting requests,
decoding them with the contract's `decode_image` on that same thread and running them as one
batch (batch 2 is the model's cheapest per image here). One hand-off to the worker and one back,
no admission, deadlines, metrics, batching policy or priorities. A request that fails to
decode fails its whole batch (500): a measuring instrument, not a server to deploy.

docs/benchmarks.md measures it beside Roost and the naive server: what it
reaches is the ceiling goal 1 can be held to, and Roost's distance to it is what Roost's
features cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request

from bench.cpu_floor import one_thread_session
from roost.contract.card import read_card
from roost.contract.images import decode_image
from roost.contract.labels import read_labels

_MAX_PIXELS = 60_000_000
_BATCH = 2
_TOP_K = 5

Job = tuple[bytes, asyncio.Future[dict[str, object]], asyncio.AbstractEventLoop]


def _worker(folder: Path, jobs: queue.SimpleQueue[Job | None]) -> None:
    """Take up to two jobs, decode and run them as one batch, answer; until a None arrives."""
    card = read_card(folder)
    labels = [label.name for label in read_labels(folder)]
    session = one_thread_session(folder / "model.onnx")
    name = session.get_inputs()[0].name
    while (first := jobs.get()) is not None:
        batch = [first]
        while len(batch) < _BATCH:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                jobs.put(None)  # for this worker's next turn, after this batch
                break
            batch.append(job)
        try:
            images = [
                decode_image(queued[0], card.image_size, card.resize, _MAX_PIXELS)
                for queued in batch
            ]
            pixels = np.stack(images)
            (scores,) = session.run(None, {name: pixels})
        except Exception as exc:  # the whole batch fails (a bad image): the worker goes on
            for _, future, loop in batch:
                loop.call_soon_threadsafe(_settle, future, exc)
            continue
        k = min(_TOP_K, scores.shape[1])
        for (_, future, loop), row in zip(batch, scores, strict=True):
            best = np.argpartition(-row, k - 1)[:k]
            best = best[np.argsort(-row[best], kind="stable")]
            answer: dict[str, object] = {
                "predictions": [{"label": labels[i], "score": float(row[i])} for i in best]
            }
            loop.call_soon_threadsafe(_settle, future, answer)


def _settle(
    future: asyncio.Future[dict[str, object]], outcome: dict[str, object] | Exception
) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def create_app(folder: Path) -> FastAPI:
    """The lean server on the model version in `folder`; its workers start with the app."""
    jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = [
            threading.Thread(target=_worker, args=(folder, jobs), daemon=True)
            for _ in range(os.cpu_count() or 1)
        ]
        for worker in workers:
            worker.start()
        yield
        for _ in workers:
            jobs.put(None)

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/classify")
    async def classify(request: Request) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, object]] = loop.create_future()
        jobs.put((await request.body(), future, loop))
        return await future

    return app


def __getattr__(name: str) -> FastAPI:
    """`bench.lean_server:app` for uvicorn: built on first use from MODEL_DIR, not on import."""
    if name == "app":
        return create_app(Path(os.environ.get("MODEL_DIR", "model_repo/imagenet/1")))
    raise AttributeError(name)
