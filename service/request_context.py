"""What one request carries through the server for its log lines and its error body: its id
(the client's X-Request-ID, or one made here), and the model and version routed to once known.

Set by the protocols' entry points (HTTP middleware, gRPC handlers) for the task that serves
the request; asyncio copies it into tasks and `to_thread` calls started from there.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128


@dataclass
class RequestContext:
    request_id: str
    model: str | None = None
    version: int | None = None


CURRENT: ContextVar[RequestContext | None] = ContextVar("roost_request", default=None)


def accepted_request_id(offered: str | None) -> str:
    """The client's id when it is 1-128 visible ASCII characters (so it can go into a header
    and a log line as it is); otherwise a new random one."""
    if offered and len(offered) <= MAX_REQUEST_ID_CHARS and all("!" <= c <= "~" for c in offered):
        return offered
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    context = CURRENT.get()
    return None if context is None else context.request_id


def note_route(model: str, version: int) -> None:
    """The model and version this request was routed to (for its log lines)."""
    context = CURRENT.get()
    if context is not None:
        context.model, context.version = model, version
