"""Lingering read: answer an early refusal only after the client has finished sending.

A client that sends its whole body without `Expect: 100-continue` (Python's `requests` and
`urllib` do) reads no answer until it has written the last byte. If the server answers a
refusal (413, 404, 503 at admission) and closes while the body is still arriving, the kernel
resets the connection and the client sees "connection reset" instead of the JSON error. So,
as nginx's lingering close does, the rest of the body is read and thrown away, bounded in bytes
and seconds, before the response starts. A client that asked for `100-continue` was never told
to send its body, so nothing is read for it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class LingeringBodyMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        body_done = not (b"content-length" in headers or b"transfer-encoding" in headers)

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def lingering_send(message: Message) -> None:
            nonlocal body_done
            if message["type"] == "http.response.start" and not body_done:
                body_done = True
                if not expects_continue:
                    await self._discard(receive)
            await send(message)

        await self.app(scope, tracking_receive, lingering_send)

    async def _discard(self, receive: Receive) -> None:
        discarded = 0
        give_up_at = time.monotonic() + self.max_seconds
        while discarded <= self.max_bytes:
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                break
            if message["type"] != "http.request":
                return
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                log.debug("read and discarded %d body bytes before a refusal", discarded)
                return
        log.info("stopped reading a refused request's body after %d bytes", discarded)
