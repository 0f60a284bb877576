"""Answers already computed, by image: an LRU bounded in bytes.

A key holds everything that shapes the probabilities: the version number, the loaded model's
identity (model.onnx's SHA-256 with the card's input size and resize rule, so files replaced in
place under the same number never meet the old answers), the kind of input (encoded image
bytes are decoded and resized; raw pixels are not, so the same bytes mean different pictures)
and the SHA-256 of the input's bytes. A hit returns exactly what the session returned (kept
read-only); top-k is applied afterwards as for a computed answer.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Literal, NamedTuple

import numpy as np

ENTRY_OVERHEAD_BYTES = 200
"""Charged per entry on top of the probabilities: key, digest and bookkeeping, roughly."""

InputKind = Literal["image", "pixels"]
"""`image`: encoded bytes (JPEG, PNG, ...) the server decodes; `pixels`: decoded uint8 images."""


class CacheKey(NamedTuple):
    version: int
    model: str
    """The loaded model's identity: `model_identity(...)`."""
    kind: InputKind
    digest: bytes
    """SHA-256 of the input's bytes."""


def model_identity(sha256: str, image_size: tuple[int, int], resize: str) -> str:
    """What makes two loads of a version answer alike: the weights and how inputs are made."""
    height, width = image_size
    return f"{sha256.lower()}:{height}x{width}:{resize}"


def cache_key(version: int, model: str, kind: InputKind, data: bytes) -> CacheKey:
    return CacheKey(version, model, kind, hashlib.sha256(data).digest())


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
        for key in [k for k in self._entries if k.version == version]:
            self.bytes -= self._size(self._entries.pop(key))

    @staticmethod
    def _size(probabilities: np.ndarray) -> int:
        return int(probabilities.nbytes) + ENTRY_OVERHEAD_BYTES
