"""The request flow, top to bottom: decode -> batch queue -> session -> top-k.

Shared by every protocol front end (/v1, Open Inference Protocol REST and gRPC): they route,
admit and read their input, then call `score_uploads` (encoded images) or `score_arrays`
(decoded uint8 images) and shape the answer their own way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry.trace import Tracer

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from roost.contract.images import decode_bytes_bound
from service.errors import (
    DeadlineExceeded,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    ServiceError,
)
from service.observability.tracing import epoch_ns, record_span, recording
from service.policy.result_cache import InputKind, cache_key, model_identity
from service.repository.registry import Route, ServedVersion
from service.runtime.batcher import BatchTiming, Decode, OnRan
from service.runtime.decode.pillow import PillowDecoder
from service.runtime.scores import Scores
from service.serving.payloads import Pixels, RequestRecorder
from service.serving.state import ServiceState


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def resolve_top_k(served: ServedVersion, k: int | None) -> int:
    """`k` checked against the model's classes, or the model's default."""
    classes = len(served.artifacts.labels)
    if k is not None and not 1 <= k <= classes:
        raise InvalidParameter(f"top_k must be between 1 and {classes} for this model")
    return min(k or served.config.default_top_k, classes)


async def score_uploads(
    state: ServiceState, route: Route, uploads: list[Upload], deadline: float
) -> list[Scores]:
    """Each image's scores: cached, or queue room, decode, batch, session."""

    async def score(served: ServedVersion, deadline: float, todo: list[int]) -> list[Scores]:
        return await _score_encoded(state, served, [uploads[i] for i in todo], deadline)

    recorder = state.payloads.recorder(route, uploads)
    data = [u.data for u in uploads]
    return await _recorded(state, route, "image", data, score, deadline, recorder)


async def score_arrays(
    state: ServiceState, route: Route, images: np.ndarray, deadline: float
) -> list[Scores]:
    """Scores for images already decoded: uint8 `[N, H, W, 3]` at the model's size."""
    height, width = route.served.artifacts.card.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (height, width, 3):
        raise InvalidParameter(
            f"decoded images must be uint8 [N, {height}, {width}, 3] for this model, "
            f"not {images.dtype} {list(images.shape)}"
        )

    async def score(served: ServedVersion, deadline: float, todo: list[int]) -> list[Scores]:
        if served.artifacts.card.image_size != (height, width):
            raise InvalidParameter("decoded images do not fit the shadow version's input size")
        return await score_decoded(state, served, list(images[todo]), deadline)

    recorder = state.payloads.recorder(route, [Pixels(image) for image in images])
    data = [image.tobytes() for image in images]
    return await _recorded(state, route, "pixels", data, score, deadline, recorder)


ScoreSome = Callable[[ServedVersion, float, list[int]], Awaitable[list[Scores]]]
"""Scores the request's images at the given indices on a version by a deadline."""


async def _recorded(
    state: ServiceState,
    route: Route,
    kind: InputKind,
    data: list[bytes],
    score: ScoreSome,
    deadline: float,
    recorder: RequestRecorder | None,
) -> list[Scores]:
    """`_score`, its answers (and the shadow's disagreements) told to the payload log's
    `recorder` when the model has one."""
    on_disagreement = None
    if recorder is not None and recorder.wants_disagreements:
        on_disagreement = recorder.shadow_disagreed
    scores = await _score(state, route, kind, data, score, deadline, on_disagreement)
    if recorder is not None:
        recorder.answered(scores)  # before the shadow copy (a task) can run
    return scores


async def _score(
    state: ServiceState,
    route: Route,
    kind: InputKind,
    data: list[bytes],
    score: ScoreSome,
    deadline: float,
    on_disagreement: Callable[[list[int]], None] | None = None,
) -> list[Scores]:
    """The model's policy around scoring: the result cache, then counting answers (top-1,
    confidence, drift), then a shadow copy when the route drew one. `data`: each input's bytes,
    of the `kind` the cache keys them by."""
    served, policy = route.served, route.policy
    keys = []
    if policy.cache is not None:
        card = served.artifacts.card
        model = model_identity(card.sha256, card.image_size, card.resize)
        keys = [cache_key(served.version, model, kind, d) for d in data]
    found: list[Scores | None] = [policy.cached(key) for key in keys] or [None] * len(data)
    todo = [i for i, scores in enumerate(found) if scores is None]
    if todo:
        for i, scores in zip(todo, await score(served, deadline, todo), strict=True):
            found[i] = scores
            if keys:
                policy.remember(keys[i], scores)
    answered = [scores for scores in found if scores is not None]
    artifacts = served.artifacts
    policy.observe_results(
        served.version, artifacts.labels, artifacts.card.prediction_profile, answered
    )
    if route.shadow is not None:
        everything = list(range(len(data)))
        state.shadows.start(
            route, answered, lambda v, by: score(v, by, everything), on_disagreement
        )
    return answered


async def _score_encoded(
    state: ServiceState, served: ServedVersion, uploads: list[Upload], deadline: float
) -> list[Scores]:
    on_ran = _batch_spans(state.tracer)
    with served.batcher.reserve(len(uploads), deadline) as reservation:
        if _decodes_on_inference_threads(state, served):
            calls = [_decode_call(state, served, u, deadline) for u in uploads]
            futures = reservation.submit(calls, deadline, on_ran)
        else:
            images = await asyncio.gather(
                *(decode_upload(state, served, u, deadline) for u in uploads)
            )
            futures = reservation.submit(list(images), deadline, on_ran)
    return await _answers(futures, deadline, state.settings.request_timeout_s)


def _decodes_on_inference_threads(state: ServiceState, served: ServedVersion) -> bool:
    """On the CPU (ROOST_CPU_DECODE=inference), the thread that runs a batch decodes its
    images: one hand-off fewer per image, and batches fill from a queue of whole requests
    instead of waiting for decodes to finish (docs/benchmarks-journal.md). Not on
    a GPU, where decoding on the CPU overlaps the GPU's work."""
    return (
        state.settings.cpu_decode == "inference"
        and not served.artifacts.classifier.on_gpu
        and isinstance(state.decoder, PillowDecoder)
    )


async def score_decoded(
    state: ServiceState, served: ServedVersion, images: Sequence[np.ndarray], deadline: float
) -> list[Scores]:
    """Queue room, batch, session for decoded images: no cache, no counting, no shadow (the
    explain endpoint's masked copies are not answers)."""
    with served.batcher.reserve(len(images), deadline) as reservation:
        futures = reservation.submit(list(images), deadline, _batch_spans(state.tracer))
    return await _answers(futures, deadline, state.settings.request_timeout_s)


def _batch_spans(tracer: Tracer | None) -> OnRan | None:
    """With the current request traced: what records an image's ``roost.queue_wait`` and
    ``roost.inference`` spans under it once its batch ran (the batch serves other requests
    too, so its times are recorded per image, with the batch's size)."""
    tracer = recording(tracer)
    if tracer is None:
        return None
    parent = otel_context.get_current()

    def record(timing: BatchTiming) -> None:
        record_span(
            tracer,
            "roost.queue_wait",
            epoch_ns(timing.enqueued_at),
            epoch_ns(timing.taken_at),
            parent=parent,
        )
        record_span(
            tracer,
            "roost.inference",
            epoch_ns(timing.run_started_at),
            epoch_ns(timing.run_ended_at),
            {"roost.batch_size": timing.batch_size},
            parent=parent,
        )

    return record


async def _answers(
    futures: list[asyncio.Future[Scores]], deadline: float, timeout_s: float
) -> list[Scores]:
    try:
        # NOTE: a timeout scope, not wait_for: wait_for wraps the gather in a task of its own,
        # an event-loop cost every request paid (docs/benchmarks-journal.md).
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return list(await asyncio.gather(*futures))
    except TimeoutError:
        raise DeadlineExceeded(f"no answer within the {timeout_s:g} s request deadline") from None
    finally:
        for future in futures:
            future.cancel()  # no-op when done; otherwise the batcher skips it


async def decode_upload(
    state: ServiceState, served: ServedVersion, upload: Upload, deadline: float
) -> np.ndarray:
    """One upload at the version's input size, on the decode pool (415 / 413 per image)."""
    decode = _decode_call(state, served, upload, deadline)
    return await asyncio.get_running_loop().run_in_executor(state.decode_pool, decode)


def _decode_call(
    state: ServiceState, served: ServedVersion, upload: Upload, deadline: float
) -> Decode:
    """The decode of one upload, for whichever thread runs it (decode pool or inference).

    It holds what its image's header says the decode can cost in the server's decode memory,
    then takes its turn in the CPU gate by the request's `deadline` (monotonic), after the work
    of requests that arrived before it (runtime/cpu_gate.py), and raises InvalidImage (415) or
    PayloadTooLarge (413) for an image it cannot take, Overloaded (503) when the decode memory
    stays full until the deadline.
    """
    card = served.artifacts.card
    settings = state.settings
    decoder = state.decoder
    decode_seconds = state.metrics.decode_seconds.labels(served.name)
    tracer = recording(state.tracer)
    # The request's trace context, for a span recorded on whichever thread decodes.
    parent = otel_context.get_current() if tracer is not None else None

    def decode() -> np.ndarray:
        started = time.perf_counter()
        started_ns = time.time_ns() if tracer is not None else 0
        try:
            # The header says what the decode can cost; it holds that much of the server's
            # decode memory (service/serving/decode_memory.py) before its turn in the CPU gate.
            need = decode_bytes_bound(upload.data, card.image_size)
            with state.decode_memory.hold(need, deadline):
                image = state.cpu_gate.call(
                    1,
                    deadline,
                    decoder.decode,
                    upload.data,
                    card.image_size,
                    card.resize,
                    settings.max_image_pixels,
                )
        except (InvalidImageError, ImageTooLargeError) as exc:
            kind: type[ServiceError] = (
                PayloadTooLarge if isinstance(exc, ImageTooLargeError) else InvalidImage
            )
            refusal = kind(f"{upload.filename}: {exc}" if upload.filename else str(exc))
            if tracer is not None:
                record_span(tracer, "roost.decode", started_ns, error=refusal, parent=parent)
            raise refusal from None
        decode_seconds.observe(time.perf_counter() - started)
        if tracer is not None:
            attributes = {"roost.image_bytes": len(upload.data)}
            record_span(tracer, "roost.decode", started_ns, attributes=attributes, parent=parent)
        return image

    return decode
