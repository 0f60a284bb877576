"""The HTTP side of admission: `admitted_request` and reading the body once.

`/v1/classify` and `/v2/.../infer` wrap `service.serving.admission.admitted` (route, lease, admit,
count) with what only HTTP has:

    async with admitted_request(request, state, model, version) as admitted:
        body = await read_body(request, max_upload_bytes, admitted.count_body_bytes)
        ...  # parse, `score_uploads` / `score_arrays` by `admitted.deadline`, answer

- the request deadline starts when the request arrives (`ROOST_REQUEST_TIMEOUT_S`);
- the body is read once, capped at `max_upload_bytes` (413), and counted in
  `roost_request_body_bytes_total`; a client that goes away meanwhile is a 499, logged at info.
  Around the app (service/protocols/http/lingering.py) the body must have arrived by a
  deadline taken from the same setting a moment earlier (408 past it), and counts against the
  server's budget of body bytes in flight (503 before reading when it does not fit).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.errors import ClientClosedRequest, ServiceError
from service.protocols.http.uploads import limited_stream, read_all
from service.repository.registry import VersionSelector
from service.serving.admission import Admitted, admitted, status_code
from service.serving.state import ServiceState

log = logging.getLogger(__name__)

ROUTE_KEY_HEADER = "X-Roost-Route-Key"
"""A client's key for the traffic split: the same key gets the same version while the
weights stand (a user id, a session id); without it each request is drawn at random."""


@contextlib.asynccontextmanager
async def admitted_request(
    request: Request,
    state: ServiceState,
    model: str | None,
    version: VersionSelector,
    *,
    timed: bool = True,
    before_admission: Callable[[Request], None] | None = None,
    status_of: Callable[[ServiceError], int] = status_code,
) -> AsyncIterator[Admitted]:
    """`service.serving.admission.admitted` for an HTTP request; a client gone while its body is
    read inside the block becomes `ClientClosedRequest` (499)."""
    deadline = time.monotonic() + state.settings.request_timeout_s
    check = None if before_admission is None else lambda: before_admission(request)
    async with admitted(
        state,
        model,
        lambda name: version,
        deadline,
        route_key=request.headers.get(ROUTE_KEY_HEADER),
        timed=timed,
        before_admission=check,
        status_of=status_of,
    ) as admission:
        try:
            yield admission
        except ClientDisconnect:
            log.info(
                "client went away during the upload (%s v%s)",
                admission.served.name,
                admission.served.version,
            )
            raise ClientClosedRequest("the client closed the connection") from None


def _uncounted(_: int) -> None:
    pass


async def read_body(
    request: Request, limit: int, count_bytes: Callable[[int], None] = _uncounted
) -> bytes:
    """The whole request body, streamed in and refused (413) once past `limit` bytes."""
    return await read_all(limited_stream(request, limit, count_bytes))
