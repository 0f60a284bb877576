"""Bytes that image decodes may hold at once, server-wide.

Each decode first reads its image's header and holds what `decode_bytes_bound` says that image
can cost (docs/api.md, "Decode memory"); a decode that does not fit waits for others to finish,
until its request's deadline. So the server's decode memory stays under one number whatever the
number of threads, requests or images in them, and an image that alone is over it is refused
(413) before any pixel is decoded. Called from decode threads, never from the event loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from service.errors import Overloaded, PayloadTooLarge


class DecodeMemory:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._freed = threading.Condition()

    @property
    def held(self) -> int:
        """Bytes held by decodes running now."""
        return self._held

    @contextlib.contextmanager
    def hold(self, nbytes: int, deadline: float) -> Iterator[None]:
        """Hold `nbytes` while the block runs, waiting (until `deadline`, monotonic) for room.

        Raises:
            PayloadTooLarge: `nbytes` is more than the whole budget: it would never fit.
            Overloaded: no room before the deadline (503: the server is busy, not the model).
        """
        if nbytes > self.max_bytes:
            raise PayloadTooLarge(
                f"decoding this image takes up to {nbytes} bytes; the server decodes at most "
                f"{self.max_bytes} bytes at once (ROOST_MAX_DECODE_BYTES)"
            )
        with self._freed:
            while self._held + nbytes > self.max_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Overloaded("the server's decode memory stayed in use until the deadline")
                self._freed.wait(remaining)
            self._held += nbytes
        try:
            yield
        finally:
            with self._freed:
                self._held -= nbytes
                self._freed.notify_all()
