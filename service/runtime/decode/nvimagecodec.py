"""nvImageCodec as a `DecodeBatch` (`NvImageCodecBatch`): JPEG bytes -> RGB images in device
memory, with the `Decoder` and `DecodeParams` arguments Roost gives it."""

from __future__ import annotations

from typing import Any

from service.runtime.cuda import CudaRuntime


class NvImageCodecBatch:
    """`DecodeBatch` over nvImageCodec: JPEG bytes -> RGB images in device memory.

    Hardware decoder first, the CUDA decoder for what it refuses; the images' EXIF orientation
    is applied, as Pillow's path does. A batch call answers None where an image failed (and
    Pillow decodes that one again).
    """

    def __init__(self, nvimgcodec: Any, device_id: int, cudart: CudaRuntime | None) -> None:
        self._nvimgcodec = nvimgcodec
        self._decoder = nvimgcodec.Decoder(**decoder_arguments(nvimgcodec, device_id))
        self._params = decode_params(nvimgcodec)
        self._cudart = cudart

    def __call__(self, items: list[bytes]) -> list[Any]:
        streams = [self._nvimgcodec.CodeStream(item) for item in items]
        images = list(self._decoder.decode(streams, params=self._params))
        if self._cudart is not None:
            # ONNX Runtime's streams do not wait for nvImageCodec's: wait here, on every stream
            # the images name (`__cuda_array_interface__`'s "stream"; 1 is the legacy default
            # stream, a valid handle as it is), before the resize session reads the pixels.
            named = {image.__cuda_array_interface__.get("stream") for image in images if image}
            for stream in sorted(s for s in named if s) or [0]:
                self._cudart.synchronize(stream)
        return images


def decoder_arguments(nvimgcodec: Any, device_id: int) -> dict[str, Any]:
    """`nvimgcodec.Decoder`'s keyword arguments (the 0.9 API: a list of `Backend`s, the
    hardware JPEG decoder first, the CUDA one for what it refuses; no CPU backend, since a
    CPU decode here would be slower than Pillow's draft mode, which the fallback uses)."""
    kinds = nvimgcodec.BackendKind
    return {
        "device_id": device_id,
        "backends": [nvimgcodec.Backend(kinds.HW_GPU_ONLY), nvimgcodec.Backend(kinds.GPU_ONLY)],
    }


def decode_params(nvimgcodec: Any) -> Any:
    """Interleaved 8-bit RGB (H, W, 3) with EXIF orientation applied, as `decode_image` gives;
    grey JPEGs come out as three channels too."""
    return nvimgcodec.DecodeParams(
        apply_exif_orientation=True,
        color_spec=nvimgcodec.ColorSpec.SRGB,
        sample_format=nvimgcodec.SampleFormat.I_RGB,
    )
