"""The request flow, top to bottom: decode -> batch queue -> session -> top-k.

Shared by every protocol front end (/v1, Open Inference Protocol REST and gRPC): they route,
admit and read their input, then call `score_uploads` (encoded images) or `score_arrays`
(decoded uint8 images) and shape the answer their own way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from service.errors import (
    DeadlineExceeded,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    ServiceError,
)
from service.gpu_decode import image_decoder
from service.postprocess import top_k
from service.registry import ServedVersion
from service.schemas import ClassifyResponse, ImageResult
from service.state import ServiceState


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


async def classify(
    state: ServiceState,
    served: ServedVersion,
    uploads: list[Upload],
    k: int | None,
    deadline: float,
) -> ClassifyResponse:
    """Classify `uploads` on `served` by `deadline` (monotonic); the caller holds a lease."""
    labels = served.artifacts.labels
    k = resolve_top_k(served, k)
    scores = await score_uploads(state, served, uploads, deadline)
    return ClassifyResponse(
        model=served.name,
        version=served.version,
        results=[
            ImageResult(filename=u.filename, predictions=top_k(s, k, labels))
            for u, s in zip(uploads, scores, strict=True)
        ],
    )


def resolve_top_k(served: ServedVersion, k: int | None) -> int:
    """`k` checked against the model's classes, or the model's default."""
    classes = len(served.artifacts.labels)
    if k is not None and not 1 <= k <= classes:
        raise InvalidParameter(f"top_k must be between 1 and {classes} for this model")
    return min(k or served.config.default_top_k, classes)


async def score_uploads(
    state: ServiceState, served: ServedVersion, uploads: list[Upload], deadline: float
) -> list[np.ndarray]:
    """Each image's probabilities `[C]`: queue room, decode, batch, session."""
    with served.batcher.reserve(len(uploads), deadline) as reservation:
        images = await asyncio.gather(*(_decode(state, served, u) for u in uploads))
        futures = reservation.submit(list(images), deadline)
    return await _answers(futures, deadline, state.settings.request_timeout_s)


async def score_arrays(
    state: ServiceState, served: ServedVersion, images: np.ndarray, deadline: float
) -> list[np.ndarray]:
    """Probabilities for images already decoded: uint8 `[N, H, W, 3]` at the model's size."""
    height, width = served.artifacts.card.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (height, width, 3):
        raise InvalidParameter(
            f"decoded images must be uint8 [N, {height}, {width}, 3] for this model, "
            f"not {images.dtype} {list(images.shape)}"
        )
    with served.batcher.reserve(len(images), deadline) as reservation:
        futures = reservation.submit(list(images), deadline)
    return await _answers(futures, deadline, state.settings.request_timeout_s)


async def _answers(
    futures: list[asyncio.Future[np.ndarray]], deadline: float, timeout_s: float
) -> list[np.ndarray]:
    try:
        return list(
            await asyncio.wait_for(
                asyncio.gather(*futures), timeout=max(0.0, deadline - time.monotonic())
            )
        )
    except TimeoutError:
        raise DeadlineExceeded(f"no answer within the {timeout_s:g} s request deadline") from None
    finally:
        for future in futures:
            future.cancel()  # no-op when done; otherwise the batcher skips it


async def _decode(state: ServiceState, served: ServedVersion, upload: Upload) -> np.ndarray:
    card = served.artifacts.card
    started = time.perf_counter()
    try:
        # Pillow, or baseline JPEGs on the GPU (ROOST_GPU_DECODE): service/gpu_decode.py
        image = await asyncio.get_running_loop().run_in_executor(
            state.decode_pool,
            image_decoder(state.settings).decode,
            upload.data,
            card.image_size,
            card.resize,
            state.settings.max_image_pixels,
        )
    except (InvalidImageError, ImageTooLargeError) as exc:
        kind: type[ServiceError] = (
            PayloadTooLarge if isinstance(exc, ImageTooLargeError) else InvalidImage
        )
        raise kind(f"{upload.filename}: {exc}" if upload.filename else str(exc)) from None
    state.metrics.decode_seconds.labels(served.name).observe(time.perf_counter() - started)
    return image
