"""What every inference route does around its protocol: route, lease, admit, read, count.

`/v1/classify` and the Open Inference Protocol's `/v2/.../infer` share it:

    async with admitted_request(request, state, model, version) as admitted:
        body = await read_body(request, max_upload_bytes, admitted.count_body_bytes)
        ...  # parse, `score_uploads` / `score_arrays` by `admitted.deadline`, answer

- the model (or the repository's default) and version are routed to a `ServedVersion`, whose
  lease is held until the answer is built, so unloading waits for the request;
- admission (`batcher.admit`) is checked before a single body byte is read, so an overloaded
  server refuses without paying for the upload;
- the body is read once, capped at `max_upload_bytes` (413), and counted in
  `roost_request_body_bytes_total`; a client that goes away meanwhile is a 499, logged at info;
- the outcome is counted in `roost_requests_total{model, version, code}` with the status the
  client sees (`status_of` maps an error to it: the v2 protocol answers 400 where /v1 says
  415 or 422), and the time in `roost_request_duration_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.api.uploads import limited_stream
from service.errors import ClientClosedRequest, ServiceError
from service.metrics import UNKNOWN_MODEL
from service.registry import ServedVersion
from service.state import ServiceState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """A routed, leased and admitted request, its body not read yet."""

    served: ServedVersion
    deadline: float
    """Monotonic time by which the answer must be ready (504 past it)."""
    count_body_bytes: Callable[[int], None]
    """Tell the metrics of body bytes read."""


def status_code(exc: ServiceError) -> int:
    return exc.status_code


@contextlib.asynccontextmanager
async def admitted_request(
    request: Request,
    state: ServiceState,
    model: str | None,
    version: int | None,
    *,
    before_admission: Callable[[Request], None] | None = None,
    status_of: Callable[[ServiceError], int] = status_code,
) -> AsyncIterator[Admitted]:
    """Route, lease and admit `request`; count its outcome when the block ends.

    `before_admission` refuses what no reader could handle (the media type) before admission.
    Raises what the registry and the batcher raise (404, 503), and `ClientClosedRequest` when
    the client goes away while its body is read inside the block.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + state.settings.request_timeout_s
    registry, metrics = state.registry, state.metrics
    model_label, version_label, code = UNKNOWN_MODEL, "", "200"
    try:
        name = model or registry.default_model()
        if registry.known_model(name):
            model_label = name
        served = registry.get(name, version)
        version_label = str(served.version)
        with served.lease():
            if before_admission is not None:
                before_admission(request)
            served.batcher.admit(1, deadline)  # before the body: refusal costs no upload
            body_bytes = metrics.request_body_bytes.labels(model_label)
            yield Admitted(served, deadline, body_bytes.inc)
    except ClientDisconnect:
        code = "499"
        log.info("client went away during the upload (%s v%s)", model_label, version_label)
        raise ClientClosedRequest("the client closed the connection") from None
    except ServiceError as exc:
        code = str(status_of(exc))
        raise
    except asyncio.CancelledError:
        code = "499"  # the client went away
        raise
    except Exception:
        code = "500"
        raise
    finally:
        metrics.requests.labels(model_label, version_label, code).inc()
        if model_label != UNKNOWN_MODEL:
            metrics.request_seconds.labels(model_label).observe(time.perf_counter() - started)


def _uncounted(_: int) -> None:
    pass


async def read_body(
    request: Request, limit: int, count_bytes: Callable[[int], None] = _uncounted
) -> bytes:
    """The whole request body, streamed in and refused (413) once past `limit` bytes."""
    return b"".join([chunk async for chunk in limited_stream(request, limit, count_bytes)])
