"""What kind of JPEG is it? The frame header (SOFn) read from the marker segments, whether the
hardware decoder takes it, and the scale Pillow's draft mode would decode it at."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SOF0_BASELINE = 0xC0
SOF1_EXTENDED = 0xC1
SOF2_PROGRESSIVE = 0xC2
_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_MAX_SEGMENTS = 4096


@dataclass(frozen=True)
class JpegInfo:
    """The frame header (SOFn) of a JPEG: its coding process and declared size."""

    marker: int
    precision: int
    height: int
    width: int
    components: int

    @property
    def baseline(self) -> bool:
        return self.marker == SOF0_BASELINE

    @property
    def progressive(self) -> bool:
        return self.marker in (0xC2, 0xC6, 0xCA, 0xCE)


def jpeg_info(data: bytes) -> JpegInfo | None:
    """The first frame header of `data`; None when it is not a JPEG or none is found.

    Walks the marker segments from SOI by their lengths (EXIF, ICC and other APPn segments are
    skipped, not scanned) and stops at the first SOFn, or at SOS/EOI (no frame: None).
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    for _ in range(_MAX_SEGMENTS):
        if pos + 2 > len(data) or data[pos] != 0xFF:
            return None
        while pos + 2 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        marker = data[pos + 1]
        pos += 2
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return None
        if pos + 2 > len(data):
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            return None
        if marker in _FRAME_MARKERS:
            if length < 8 or pos + 8 > len(data):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            return JpegInfo(marker, precision, height, width, components)
        pos += length
    return None


def gpu_decodable(info: JpegInfo | None) -> bool:
    """What the hardware decoder takes: baseline, 8-bit, grey or YCbCr (not CMYK)."""
    return (
        info is not None
        and info.baseline
        and info.precision == 8
        and info.components in (1, 3)
        and info.height > 0
        and info.width > 0
    )


def draft_scale(info: JpegInfo, size: tuple[int, int]) -> int:
    """The reduction (1, 2, 4 or 8) at which `decode_image` lets libjpeg decode this JPEG
    (Pillow's `draft()`: the largest keeping both sides >= the model's larger side)."""
    side = max(size)
    scale = min(info.width // side, info.height // side)
    return next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)
