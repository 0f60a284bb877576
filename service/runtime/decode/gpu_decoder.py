"""The GPU decoder (`GpuDecoder`): baseline JPEGs decoded in batches on the device and resized
there; every other image, and any image the GPU fails on, decoded by Pillow.

Train/serve parity: the GPU path resizes the full-size decode with an antialiased bilinear
filter (ONNX `Resize`, `antialias=1`, which follows Pillow's), whereas Pillow first lets libjpeg
decode at a reduced scale (draft mode) and upsamples chroma differently. Pixels differ by a few
levels (tests/service/runtime/decode/test_gpu_decoder.py; docs/gpu.md); the reference images in
card.json are checked at load through this same decoder, so a model whose top-1 flips under
GPU decoding is refused at load rather than served.
"""

from __future__ import annotations

import logging

import numpy as np

from roost.contract.card import ResizeMode
from roost.contract.errors import ImageTooLargeError
from roost.contract.images import decode_image
from service.runtime.decode.coalescer import DecodeBatch, DecodeCoalescer
from service.runtime.decode.device_resize import DeviceResizer
from service.runtime.decode.jpeg import draft_scale, gpu_decodable, jpeg_info

log = logging.getLogger(__name__)


class GpuDecoder:
    """Baseline JPEGs through `decode_batch` + `resizer`; everything else through Pillow.

    The hardware JPEG decoder takes baseline JPEG only, so the JPEG's frame marker is read
    first (`jpeg_info`): SOF0 (baseline, 8-bit, 1 or 3 components) goes to the GPU;
    progressive (SOF2), extended, lossless, CMYK, PNG, WebP ... go to Pillow. Baseline JPEGs
    from concurrent requests are decoded together (`DecodeCoalescer`), into device memory,
    then resized on the device (`DeviceResizer`): only the model-sized result comes back to
    the host. A JPEG the GPU fails on is decoded again by Pillow, which also gives the client
    its error. `counts`: how many images took each way.
    """

    name = "nvimgcodec"

    def __init__(
        self, decode_batch: DecodeBatch, resizer: DeviceResizer, max_batch: int = 64
    ) -> None:
        self._coalescer = DecodeCoalescer(decode_batch, max_batch)
        self._resizer = resizer
        self.counts = {"gpu": 0, "pillow": 0, "fallback": 0}

    def decode(
        self, data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
    ) -> np.ndarray:
        info = jpeg_info(data)
        if not gpu_decodable(info):
            self.counts["pillow"] += 1
            return decode_image(data, size, resize, max_pixels)
        assert info is not None
        if info.width * info.height > max_pixels:  # before any pixel is decoded, as Pillow's
            raise ImageTooLargeError(
                f"image is {info.width}x{info.height} pixels; the limit is {max_pixels}"
            )
        try:
            decoded = self._coalescer.submit(data)
            if decoded is not None:
                image = self._resizer(decoded, size, resize, draft_scale(info, size))
                self.counts["gpu"] += 1
                return image
        except Exception as exc:  # a GPU failure must not fail the request: Pillow decides
            log.debug("GPU decode failed, decoding with Pillow: %s", exc)
        self.counts["fallback"] += 1
        return decode_image(data, size, resize, max_pixels)
