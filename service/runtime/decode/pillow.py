"""The decoder interface every request and every load-time reference check uses, and the
decoder training decodes with: Pillow, through `roost.contract.images.decode_image`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from roost.contract.card import ResizeMode
from roost.contract.images import decode_image


class ImageDecoder(Protocol):
    """bytes -> `(H, W, 3)` uint8 at the model's size, raising what `decode_image` raises."""

    name: str

    def decode(
        self, data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
    ) -> np.ndarray: ...


class PillowDecoder:
    """`roost.contract.images.decode_image`: what training decodes with. It keeps no state, so
    one instance (`PILLOW`) serves everyone."""

    name = "pillow"

    def decode(
        self, data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
    ) -> np.ndarray:
        return decode_image(data, size, resize, max_pixels)


PILLOW = PillowDecoder()
