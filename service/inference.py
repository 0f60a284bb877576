"""The request flow, top to bottom: route -> decode -> batch queue -> session -> top-k."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from roost.contract.images import decode_image
from service.errors import (
    DeadlineExceeded,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    ServiceError,
)
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
    settings = state.settings
    labels = served.artifacts.labels
    if k is not None and not 1 <= k <= len(labels):
        raise InvalidParameter(f"top_k must be between 1 and {len(labels)} for this model")
    k = min(k or served.config.default_top_k, len(labels))

    with served.batcher.reserve(len(uploads), deadline) as reservation:
        images = await asyncio.gather(*(_decode(state, served, u) for u in uploads))
        futures = reservation.submit(list(images), deadline)
    try:
        scores = await asyncio.wait_for(
            asyncio.gather(*futures), timeout=max(0.0, deadline - time.monotonic())
        )
    except TimeoutError:
        raise DeadlineExceeded(
            f"no answer within the {settings.request_timeout_s:g} s request deadline"
        ) from None
    finally:
        for future in futures:
            future.cancel()  # no-op when done; otherwise the batcher skips it
    return ClassifyResponse(
        model=served.name,
        version=served.version,
        results=[
            ImageResult(filename=u.filename, predictions=top_k(s, k, labels))
            for u, s in zip(uploads, scores, strict=True)
        ],
    )


async def _decode(state: ServiceState, served: ServedVersion, upload: Upload) -> np.ndarray:
    card = served.artifacts.card
    started = time.perf_counter()
    try:
        image = await asyncio.get_running_loop().run_in_executor(
            state.decode_pool,
            decode_image,
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
