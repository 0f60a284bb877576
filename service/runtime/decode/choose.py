"""Which decoder a server uses, from its settings: `choose_decoder(settings)`, called once by
the app's lifespan; the registry's load-time reference checks and every request then use it.

- Pillow (`PILLOW`): the default, and the fallback when `ROOST_GPU_DECODE` is off, or on but
  impossible (no `nvidia-nvimgcodec-cu12`/`-cu13` package, no CUDA provider, no GPU): then ONE
  warning says why.
- `GpuDecoder`: baseline JPEGs on the GPU (nvImageCodec, resized on the device), the rest
  with Pillow.
"""

from __future__ import annotations

import logging

import onnxruntime as ort

from service.runtime.cuda import CPU, CUDA, CudaRuntime
from service.runtime.decode.device_resize import DeviceResizer
from service.runtime.decode.gpu_decoder import GpuDecoder
from service.runtime.decode.nvimagecodec import NvImageCodecBatch
from service.runtime.decode.pillow import PILLOW, ImageDecoder
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def choose_decoder(settings: ServiceSettings) -> ImageDecoder:
    """The decoder for these settings: Pillow, or the GPU decoder when asked for and possible.
    Opens the GPU decoder (a CUDA context, an ONNX Runtime session) each time it is called."""
    if not settings.gpu_decode:
        return PILLOW
    try:
        batch, resizer = open_gpu_parts(settings)
    except Exception as exc:  # ImportError, no GPU, no driver, a library that won't load ...
        log.warning(
            "ROOST_GPU_DECODE is on but GPU decoding is unavailable (%s): "
            "every image is decoded with Pillow",
            _first_line(exc),
        )
        return PILLOW
    log.info(
        "decoding baseline JPEGs on GPU %d with nvImageCodec; other images with Pillow",
        settings.cuda_device_id,
    )
    return GpuDecoder(batch, resizer, max_batch=max(1, settings.max_batch_size))


def open_gpu_parts(settings: ServiceSettings) -> tuple[NvImageCodecBatch, DeviceResizer]:
    """The GPU decoder's two parts on `settings.cuda_device_id`: nvImageCodec's batch decode
    and the device resize. Raises RuntimeError saying why when they cannot open."""
    if not settings.use_cuda:
        raise RuntimeError("ROOST_USE_CUDA is false")
    if CUDA not in ort.get_available_providers():
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    try:
        from nvidia import nvimgcodec  # the nvidia-nvimgcodec-cu12/-cu13 package
    except ImportError as exc:
        raise RuntimeError(
            f"nvImageCodec does not import ({exc}); install nvidia-nvimgcodec-cu13[nvjpeg] "
            "(or -cu12, matching onnxruntime-gpu's CUDA)"
        ) from None
    batch = NvImageCodecBatch(nvimgcodec, settings.cuda_device_id, CudaRuntime.load())
    resizer = DeviceResizer(
        [(CUDA, {"device_id": str(settings.cuda_device_id)}), CPU], settings.cuda_device_id
    )
    return batch, resizer


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().split("\n")[0] or type(exc).__name__)[:300]
