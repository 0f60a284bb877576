"""nvImageCodec: the arguments Roost builds are its API (checked here without a GPU), and on a
GPU its pixels, the device resize reading them where they lie, and the whole GPU decoder match
Pillow (marked `gpu`: bench/gpu/run.sh runs it on the GPU machine)."""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from decode_helpers import CPU, jpeg, photo
from PIL import Image

from roost.contract.images import decode_image
from service.runtime.cuda import CudaRuntime
from service.runtime.decode.choose import choose_decoder
from service.runtime.decode.device_resize import DeviceResizer, device_layout
from service.runtime.decode.gpu_decoder import GpuDecoder
from service.runtime.decode.jpeg import draft_scale, jpeg_info
from service.runtime.decode.nvimagecodec import (
    NvImageCodecBatch,
    decode_params,
    decoder_arguments,
)
from service.settings import ServiceSettings


def test_nvimgcodec_takes_our_arguments() -> None:
    """The real nvImageCodec package, here without a GPU: the arguments Roost builds are its
    API (0.9's constructor refused the ones written before it, and every image fell back to
    Pillow on the GPU machine). Only the decoder's construction needs a GPU: without one it
    fails for that reason, not for its arguments (a TypeError would)."""
    from nvidia import nvimgcodec

    params = decode_params(nvimgcodec)
    assert params.sample_format == nvimgcodec.SampleFormat.I_RGB
    assert params.apply_exif_orientation
    arguments = decoder_arguments(nvimgcodec, 0)
    kinds = nvimgcodec.BackendKind
    assert [b.backend_kind for b in arguments["backends"]] == [kinds.HW_GPU_ONLY, kinds.GPU_ONLY]
    stream = nvimgcodec.CodeStream(jpeg(photo(96)))
    assert (stream.codec_name, stream.width) == ("jpeg", 96)
    with contextlib.suppress(RuntimeError):  # "Could not create decoder" with no GPU
        nvimgcodec.Decoder(**arguments)


@pytest.mark.gpu
def test_nvimgcodec_on_the_gpu_matches_pillow() -> None:
    """Runs where nvImageCodec and onnxruntime-gpu work (bench/gpu/run.sh on the GPU machine),
    in steps, so that a failure says which part differs: nvImageCodec's full-size pixels
    (copied to the host) against Pillow's; the resize graph on CUDA, reading them where they
    lie, against the same graph on the CPU; then the whole path against `decode_image`."""
    decoder = choose_decoder(ServiceSettings(gpu_decode=True))
    assert isinstance(decoder, GpuDecoder), "no GPU decoding (needs onnxruntime-gpu, nvImageCodec)"
    from nvidia import nvimgcodec

    batch = NvImageCodecBatch(nvimgcodec, 0, CudaRuntime.load())
    on_cuda = DeviceResizer([("CUDAExecutionProvider", {"device_id": "0"}), CPU[0]])
    on_cpu = DeviceResizer(CPU)
    for width in (333, 512, 1024):
        data = jpeg(photo(width))
        (decoded,) = batch([data])
        interface = decoded.__cuda_array_interface__
        assert device_layout(interface)[0] == (width, width, 3), interface
        host = np.asarray(decoded.cpu())
        pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        levels = np.abs(host.astype(int) - pillow).mean()
        assert levels < 2.0, (
            f"nvImageCodec's pixels differ from Pillow's by {levels:.1f}: {interface}"
        )
        info = jpeg_info(data)
        assert info is not None
        for mode in ("stretch", "center_crop"):
            draft = draft_scale(info, (224, 224))
            gpu = on_cuda(decoded, (224, 224), mode, draft)  # type: ignore[arg-type]
            cpu = on_cpu(host, (224, 224), mode, draft)  # type: ignore[arg-type]
            worst = np.abs(gpu.astype(int) - cpu).max()
            assert worst <= 1, (
                f"the resize graph on CUDA differs from the CPU's by {worst} ({mode})"
            )
    for width in (512, 1024):
        data = jpeg(photo(width))
        for mode in ("stretch", "center_crop"):
            got = decoder.decode(data, (224, 224), mode, 10**8)  # type: ignore[arg-type]
            want = decode_image(data, (224, 224), mode, 10**8)  # type: ignore[arg-type]
            diff = np.abs(got.astype(int) - want)
            assert got.shape == (224, 224, 3) and diff.mean() < 2.0, diff.mean()
    assert decoder.counts["gpu"] == 4 and decoder.counts["fallback"] == 0
    with ThreadPoolExecutor(16) as pool:
        bodies = [jpeg(photo(256 + 16 * i)) for i in range(32)]
        images = list(pool.map(lambda b: decoder.decode(b, (64, 64), "stretch", 10**8), bodies))
    assert all(i.shape == (64, 64, 3) for i in images)
    assert decoder.counts["fallback"] == 0
