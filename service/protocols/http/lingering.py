"""What a client's request may cost the server before and while its body arrives.

Per connection (`TimedHTTPProtocol`, uvicorn's HTTP protocol with the bounds it lacks): a
connection waits at most `idle_timeout_s` for a request's first byte, whether it is new or
kept alive between requests, and then at most `header_timeout_s` and `MAX_HEADER_BYTES` for
the end of the request's headers; past either it is closed (too many header bytes: 400).

Per request (`RequestBodyMiddleware`, around the whole app):
- the body's bytes count against one budget for the server process: a request whose declared
  body does not fit is refused with 503 + Retry-After before any of it is read, and one without
  a declared length is refused when its next chunk stops fitting; its bytes count until its
  answer is sent;
- the body is read by the request's deadline (`request_timeout_s` from its arrival) at the
  latest: a read still waiting then raises `RequestTimeout` (408);
- lingering read: a client that sends its whole body without `Expect: 100-continue` (Python's
  `requests` and `urllib` do) reads no answer until it has written the last byte. If the server
  answers a refusal (413, 404, 503 at admission) and closes while the body is still arriving,
  the kernel resets the connection and the client sees "connection reset" instead of the JSON
  error. So, as nginx's lingering close does, the rest of the body is read and thrown away,
  bounded in bytes and seconds (and by the deadline), before the answer starts. A client that
  asked for `100-continue` was never told to send its body, so nothing is read for it;
- an answer sent before the body was read to its end closes the connection, so the unread
  rest can never be taken for the next request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from service.errors import Overloaded, RequestTimeout, ServiceError, error_body

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of a request line and headers; a larger head is answered 400 and closed."""


class BodyBudget:
    """The request body bytes one server process holds at once (`held`, at most `limit`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if size and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size

    def refusal(self) -> Overloaded:
        return Overloaded(
            f"the server holds {self.held} bytes of request bodies, its budget is "
            f"{self.limit}; retry shortly"
        )


class RequestBodyMiddleware:
    """Every HTTP request's body: counted against the budget, read by the deadline, drained
    before an early answer (the module's "per request")."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        budget: BodyBudget,
        max_body_bytes: int,
        read_seconds: float,
        lingering_max_bytes: int,
        lingering_max_s: float,
    ) -> None:
        self.app = app
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        """No route reads more of a body (413 past it): the most one declared body holds."""
        self.read_seconds = read_seconds
        self.lingering_max_bytes = lingering_max_bytes
        self.lingering_max_s = lingering_max_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _RequestBody(self, scope, receive, send)
        try:
            if body.reserve(min(body.declared or 0, self.max_body_bytes)):
                await self.app(scope, body.receive, body.send)
            else:
                await body.refuse(self.budget.refusal())
        finally:
            self.budget.give_back(body.held)


class _RequestBody:
    """One request's body as the app reads it: counted, timed, and drained before a refusal."""

    def __init__(self, bounds: RequestBodyMiddleware, scope: Scope, receive: Receive, send: Send):
        headers = dict(scope["headers"])
        self.bounds = bounds
        self.scope = scope
        self._receive = receive
        self._send = send
        self.deadline = time.monotonic() + bounds.read_seconds
        length = headers.get(b"content-length", b"")
        self.declared = int(length) if length.isdigit() else None
        self.expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        self.done = not (b"content-length" in headers or b"transfer-encoding" in headers)
        """Whether the app has had the whole body (or there is none)."""
        self.timed_out = False
        self.held = 0
        """Bytes of this request counted in the budget: declared, or received when undeclared."""

    def reserve(self, size: int) -> bool:
        if not self.bounds.budget.take(size):
            return False
        self.held += size
        return True

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()  # the disconnect a streaming answer listens for
        try:
            async with asyncio.timeout(self.deadline - time.monotonic()):
                message = await self._receive()
        except TimeoutError:
            self.timed_out = True
            raise RequestTimeout(
                f"the request body did not arrive within {self.bounds.read_seconds:g} s"
            ) from None
        if message["type"] != "http.request":
            self.done = True
            return message
        self.done = not message.get("more_body", False)
        if self.declared is None and not self.reserve(len(message.get("body", b""))):
            raise self.bounds.budget.refusal()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.done:
            drained = False
            if not self.expects_continue and not self.timed_out:
                drained = await self._discard()
            self.done = True
            if not drained:
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
        await self._send(message)

    async def refuse(self, error: ServiceError) -> None:
        """Answer `error` without running the app (the body drained first, as for any refusal)."""
        answer = JSONResponse(
            error_body(error.code, error.message), error.status_code, headers=error.headers
        )
        await answer(self.scope, self.receive, self.send)

    async def _discard(self) -> bool:
        """Read the rest of the body and drop it; whether it ended within the bounds."""
        discarded = 0
        give_up_at = min(time.monotonic() + self.bounds.lingering_max_s, self.deadline)
        while discarded <= self.bounds.lingering_max_bytes:
            try:
                async with asyncio.timeout(give_up_at - time.monotonic()):
                    message = await self._receive()
            except TimeoutError:
                break
            if message["type"] != "http.request":
                return True  # the client went away: nothing left to read
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                log.debug("read and discarded %d body bytes before a refusal", discarded)
                return True
        log.info("stopped reading a refused request's body after %d bytes", discarded)
        return False


def http_protocol(idle_timeout_s: float, header_timeout_s: float) -> functools.partial[Any]:
    """What uvicorn's `http` option takes to build `TimedHTTPProtocol` with these bounds (a
    partial of a module-level class, so worker processes can unpickle it)."""
    return functools.partial(
        TimedHTTPProtocol, idle_timeout_s=idle_timeout_s, header_timeout_s=header_timeout_s
    )


class TimedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol (httptools, else h11), which times out only a kept-alive
    connection that sends nothing, plus: a new connection that sends nothing, and a request
    whose headers arrive too slowly or are too large. uvicorn starts a request's cycle (its
    `cycle` attribute) when the request's headers are complete; until then the app sees
    nothing of it, so these bounds can only live here."""

    def __init__(self, *args: Any, idle_timeout_s: float, header_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False
        """Between requests: the next request's headers are not complete yet."""
        self._cycle_before: object = None
        """The cycle current when the wait began: a different one means the headers arrived."""
        self._head_bytes: int | None = None
        """Bytes of the awaited request so far; None before its first byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._await_request()

    def data_received(self, data: bytes) -> None:
        if self._waiting and self._head_bytes is None:
            self._head_bytes = 0
            self._arm(self.header_timeout_s, "its request's headers did not end")
        super().data_received(data)
        if not self._waiting or self._head_bytes is None:
            return
        if self.cycle is not self._cycle_before:
            self._stop_waiting()
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._stop_waiting()
            self.send_400_response(f"Request headers over {MAX_HEADER_BYTES} bytes.")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn may have started the next (pipelined) request's cycle meanwhile.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        self._waiting = True
        self._cycle_before = self.cycle
        self._head_bytes = None
        self._arm(self.idle_timeout_s, "no request began")

    def _stop_waiting(self) -> None:
        self._waiting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, seconds: float, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._give_up, seconds, reason)

    def _give_up(self, seconds: float, reason: str) -> None:
        self._timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection: %s within %g s", reason, seconds)
            self.transport.close()
