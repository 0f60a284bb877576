"""Answers already computed, by image: an LRU bounded in bytes.

Keyed by (version, SHA-256 of the image's bytes): the same bytes on the same version give the
same probabilities, so a hit returns exactly what the session returned (kept read-only), and
top-k is applied afterwards as for a computed answer.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

ENTRY_OVERHEAD_BYTES = 200
"""Charged per entry on top of the probabilities: key, digest and bookkeeping, roughly."""

CacheKey = tuple[int, bytes]


def cache_key(version: int, data: bytes) -> CacheKey:
    return version, hashlib.sha256(data).digest()


class ResultCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[CacheKey, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> np.ndarray | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: CacheKey, probabilities: np.ndarray) -> None:
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        size = self._size(probabilities)
        if size > self.max_bytes:
            return
        stored = probabilities.copy()
        stored.flags.writeable = False
        self._entries[key] = stored
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= self._size(evicted)

    def forget_version(self, version: int) -> None:
        for key in [k for k in self._entries if k[0] == version]:
            self.bytes -= self._size(self._entries.pop(key))

    @staticmethod
    def _size(probabilities: np.ndarray) -> int:
        return int(probabilities.nbytes) + ENTRY_OVERHEAD_BYTES
