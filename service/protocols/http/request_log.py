"""Every HTTP request gets an id and one access log line.

The id is the client's `X-Request-ID` when it is usable, else a new one; it is echoed on every
response (errors included), set in the request's context for its log lines and error body
(service/request_context.py), and the access line says method, path, status, duration, model
and version. Health, readiness and metrics probes stay out of the access log unless
`access_log_probes` is set. A pure ASGI middleware, outermost, so even the body middleware's
refusals carry the id.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.request_context import (
    CURRENT,
    REQUEST_ID_HEADER,
    RequestContext,
    accepted_request_id,
)

access_log = logging.getLogger("roost.access")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool, log_probes: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.log_probes = log_probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER.encode():
                offered = value.decode("latin-1")
                break
        context = RequestContext(accepted_request_id(offered))
        token = CURRENT.set(context)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), context.request_id.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            if self.access_log and (self.log_probes or path not in PROBE_PATHS):
                duration_ms = (time.perf_counter() - started) * 1000
                access_log.info(
                    "%s %s %s %.1f ms",
                    scope["method"],
                    path,
                    status or "-",
                    duration_ms,
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status or None,
                        "duration_ms": round(duration_ms, 3),
                    },
                )
            CURRENT.reset(token)
