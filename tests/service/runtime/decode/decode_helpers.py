"""What the decode tests share: JPEG bodies, synthetic and real photos, and the GPU decoder with
its GPU parts stood in for (a Pillow batch decoder, the resize graph on ONNX Runtime's CPU)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageOps

from service.runtime.decode.device_resize import RESIZE_MODEL, DeviceResizer
from service.runtime.decode.gpu_decoder import GpuDecoder

CPU = ["CPUExecutionProvider"]


def run_resize_graph(
    rows: np.ndarray,
    shape: tuple[int, int, int],
    sizes: tuple[int, int],
    starts: tuple[int, int],
    ends: tuple[int, int],
) -> np.ndarray:
    """The checked-in resize graph fed directly on ONNX Runtime's CPU: uint8 `rows` (H, pitch)
    holding an image of `shape`, resized to `sizes`, then cut to `starts`:`ends`."""
    session = ort.InferenceSession(str(RESIZE_MODEL), providers=CPU)
    feeds = {
        "image": rows,
        "shape": np.array(shape),
        "row_ends": np.array([shape[1] * 3]),
        "sizes": np.array(sizes),
        "starts": np.array(starts),
        "ends": np.array(ends),
    }
    (out,) = session.run(None, feeds)
    return np.asarray(out)


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def photo(width: int = 640) -> Image.Image:
    """A square synthetic scene (gradients, discs, texture); no data package needed, so these
    tests also run on the GPU machine, which has no scikit-image."""
    y, x = np.mgrid[0:width, 0:width] / width
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 200
    for cx, cy, r, colour in [(0.3, 0.4, 0.2, (250, 40, 40)), (0.7, 0.6, 0.15, (30, 200, 90))]:
        rgb[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = colour
    rgb += np.random.default_rng(width).normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def real_photos() -> list[np.ndarray]:
    photos = pytest.importorskip("skimage.data")  # the [test] extra; absent on the GPU machine
    return [photos.astronaut(), photos.chelsea(), photos.coffee()]


class FakeBatchDecoder:
    """nvImageCodec's stand-in: full-size RGB decode with EXIF orientation, None on failure."""

    def __init__(self, fail: bool = False, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, items: list[bytes]) -> list[np.ndarray | None]:
        with self.lock:
            self.calls.append(len(items))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("device lost")
        out: list[np.ndarray | None] = []
        for item in items:
            try:
                image = ImageOps.exif_transpose(Image.open(io.BytesIO(item)))
                out.append(np.asarray(image.convert("RGB")))
            except OSError:
                out.append(None)
        return out


def gpu_like(backend: FakeBatchDecoder | None = None) -> GpuDecoder:
    return GpuDecoder(backend or FakeBatchDecoder(), DeviceResizer(CPU), max_batch=8)
