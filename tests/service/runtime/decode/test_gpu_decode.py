"""GPU JPEG decoding, everything that can be proven without a GPU.

- Which images may go to the hardware decoder: the JPEG frame marker sniffed (SOF0 baseline
  vs SOF2 progressive, CMYK, 12-bit, not a JPEG at all).
- The fallback: ROOST_GPU_DECODE on a machine without nvImageCodec or CUDA decodes with Pillow
  and says so in ONE log line; requests and the load-time reference check use that decoder.
- The GPU pipeline with its GPU parts stood in for: a fake batch decoder (Pillow at full size,
  as nvImageCodec returns) and the device resize graph run by ONNX Runtime on the CPU, so
  routing, batching, fallbacks and train/serve parity are measured here.
What only a GPU can prove (nvImageCodec itself, device pointers, speed): docs/gpu.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from modelkit import publish
from PIL import Image, ImageOps

from roost.contract.errors import ImageTooLargeError, InvalidImageError
from roost.contract.images import decode_image
from service.runtime.classifier import CudaRuntime
from service.runtime.decode import gpu_decode
from service.runtime.decode.gpu_decode import (
    PILLOW,
    SOF0_BASELINE,
    SOF1_EXTENDED,
    SOF2_PROGRESSIVE,
    DecodeCoalescer,
    DeviceResizer,
    GpuDecoder,
    NvImageCodecBatch,
    decode_params,
    decoder_arguments,
    device_layout,
    draft_scale,
    gpu_decodable,
    image_decoder,
    jpeg_info,
    resize_geometry,
    resize_model,
)
from service.settings import ServiceSettings

CPU = ["CPUExecutionProvider"]


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def photo(width: int = 640) -> Image.Image:
    """A square synthetic scene (gradients, discs, texture); no data package needed, so this
    module also runs on the GPU machine, which has no scikit-image."""
    y, x = np.mgrid[0:width, 0:width] / width
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 200
    for cx, cy, r, colour in [(0.3, 0.4, 0.2, (250, 40, 40)), (0.7, 0.6, 0.15, (30, 200, 90))]:
        rgb[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = colour
    rgb += np.random.default_rng(width).normal(0, 6, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def real_photos() -> list[np.ndarray]:
    photos = pytest.importorskip("skimage.data")  # the [test] extra; absent on the GPU machine
    return [photos.astronaut(), photos.chelsea(), photos.coffee()]


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    gpu_decode.forget_decoders()
    yield
    gpu_decode.forget_decoders()


# --- sniffing the JPEG frame ------------------------------------------------------------------


def test_baseline_jpeg_goes_to_the_gpu() -> None:
    info = jpeg_info(jpeg(photo(320)))
    assert info is not None and info.marker == SOF0_BASELINE and info.baseline
    assert (info.width, info.height, info.components, info.precision) == (320, 320, 3, 8)
    assert gpu_decodable(info)


def test_optimized_huffman_tables_are_still_baseline() -> None:
    assert gpu_decodable(jpeg_info(jpeg(photo(200), optimize=True)))


def test_progressive_jpeg_goes_to_pillow() -> None:
    info = jpeg_info(jpeg(photo(320), progressive=True))
    assert info is not None and info.marker == SOF2_PROGRESSIVE and info.progressive
    assert not gpu_decodable(info)


def test_greyscale_baseline_goes_to_the_gpu_and_cmyk_does_not() -> None:
    grey = jpeg_info(jpeg(photo(100).convert("L")))
    assert grey is not None and grey.components == 1 and gpu_decodable(grey)
    cmyk = jpeg_info(jpeg(photo(100).convert("CMYK")))
    assert cmyk is not None and cmyk.components == 4 and not gpu_decodable(cmyk)


def test_frame_found_after_large_exif_and_icc_segments() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010E] = "x" * 30_000  # a long description: a big APP1 segment
    icc = bytes(range(256)) * 200  # a 51 kB ICC profile: APP2 segments
    data = jpeg(photo(160), exif=exif.tobytes(), icc_profile=icc)
    assert data.count(b"\xff\xe1") >= 1 and len(data) > 80_000
    info = jpeg_info(data)
    assert info is not None and info.baseline and (info.width, info.height) == (160, 160)


def handmade(marker: int, precision: int = 8, components: int = 3) -> bytes:
    frame = bytes([precision, 0, 16, 0, 32, components]) + b"\x01\x22\x00" * components
    length = (2 + len(frame)).to_bytes(2, "big")
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + b"\xff\xff" + bytes([0xFF, marker]) + length + frame + b"\xff\xd9"


def test_handmade_frames_extended_twelve_bit_and_fill_bytes() -> None:
    baseline = jpeg_info(handmade(SOF0_BASELINE))
    assert baseline is not None and (baseline.height, baseline.width) == (16, 32)
    assert gpu_decodable(baseline)  # after fill bytes (FF FF) before the marker
    assert not gpu_decodable(jpeg_info(handmade(SOF1_EXTENDED)))
    assert not gpu_decodable(jpeg_info(handmade(SOF0_BASELINE, precision=12)))
    assert not gpu_decodable(jpeg_info(handmade(0xC3)))  # lossless
    assert not gpu_decodable(jpeg_info(handmade(0xC9)))  # arithmetic coding


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff\xda\x00\x02",  # scan before any frame
        b"\xff\xd8\xff\xe0\x00",  # cut inside a length
        b"\xff\xd8\xff\xe0\x00\x01",  # length below 2
        b"\xff\xd8\xff\xe0\xff\xf0" + b"\x00" * 10,  # a length past the end
        b"\xff\xd8\xff\xc0\x00\x11\x08",  # cut inside the frame header
        b"\xff\xd8" + b"\xff\xd0" * 5000,  # only standalone markers
    ],
)
def test_not_a_jpeg_or_no_frame_header(data: bytes) -> None:
    assert jpeg_info(data) is None and not gpu_decodable(jpeg_info(data))


def test_png_and_webp_go_to_pillow() -> None:
    for fmt in ("PNG", "WEBP"):
        buffer = io.BytesIO()
        photo(64).save(buffer, fmt)
        assert jpeg_info(buffer.getvalue()) is None


# --- the fallback with no GPU -----------------------------------------------------------------


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU, also where the tests run on one (bench/gpu)."""
    monkeypatch.setattr(gpu_decode.ort, "get_available_providers", lambda: [CPU[0]])


def test_gpu_decode_off_is_pillow_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.runtime.decode.gpu_decode"):
        assert image_decoder(ServiceSettings()) is PILLOW
    assert caplog.records == []


def test_gpu_decode_without_a_gpu_falls_back_with_one_log_line(
    caplog: pytest.LogCaptureFixture, no_cuda: None
) -> None:
    settings = ServiceSettings(gpu_decode=True)
    with caplog.at_level(logging.INFO, logger="service.runtime.decode.gpu_decode"):
        decoders = {id(image_decoder(settings)) for _ in range(5)}
        image_decoder(ServiceSettings(gpu_decode=True))  # another settings object, same choice
    assert decoders == {id(PILLOW)}
    lines = [r for r in caplog.records if r.name == "service.runtime.decode.gpu_decode"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "Pillow" in lines[0].getMessage()
    assert "CUDAExecutionProvider" in lines[0].getMessage()  # why: this onnxruntime is CPU-only


def test_missing_package_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a CUDA provider reported but no nvimgcodec package, the log says which is missing."""
    monkeypatch.setattr(
        gpu_decode.ort, "get_available_providers", lambda: ["CUDAExecutionProvider"]
    )
    # Both: `from nvidia import nvimgcodec` finds an already imported package's attribute.
    monkeypatch.setitem(sys.modules, "nvidia", None)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    with caplog.at_level(logging.WARNING, logger="service.runtime.decode.gpu_decode"):
        assert image_decoder(ServiceSettings(gpu_decode=True)) is PILLOW
    (line,) = [
        r.getMessage() for r in caplog.records if r.name == "service.runtime.decode.gpu_decode"
    ]
    assert "nvimgcodec" in line


def test_use_cuda_false_means_no_gpu_decode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.runtime.decode.gpu_decode"):
        assert image_decoder(ServiceSettings(gpu_decode=True, use_cuda=False)) is PILLOW
    assert "ROOST_USE_CUDA" in caplog.records[0].getMessage()


def test_fallback_decoder_is_exactly_decode_image() -> None:
    data = jpeg(photo(300), progressive=True)
    decoder = image_decoder(ServiceSettings(gpu_decode=True))
    np.testing.assert_array_equal(
        decoder.decode(data, (64, 64), "center_crop", 10**8),
        decode_image(data, (64, 64), "center_crop", 10**8),
    )


# --- the GPU pipeline, its GPU parts stood in for ---------------------------------------------


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


def test_baseline_to_the_gpu_path_everything_else_to_pillow() -> None:
    backend = FakeBatchDecoder()
    decoder = gpu_like(backend)
    buffer = io.BytesIO()
    photo(100).save(buffer, "PNG")
    for data in [jpeg(photo(300)), jpeg(photo(300), progressive=True), buffer.getvalue()]:
        assert decoder.decode(data, (32, 32), "stretch", 10**8).shape == (32, 32, 3)
    assert backend.calls == [1]
    assert decoder.counts == {"gpu": 1, "pillow": 2, "fallback": 0}


def test_gpu_failure_decodes_with_pillow() -> None:
    data = jpeg(photo(300))
    for backend in (FakeBatchDecoder(fail=True), None):
        decoder = gpu_like(backend or FakeBatchDecoder())
        if backend is None:  # a device decode that returns None for the image
            decoder._coalescer._decode_batch = lambda items: [None] * len(items)
        got = decoder.decode(data, (48, 48), "center_crop", 10**8)
        np.testing.assert_array_equal(got, decode_image(data, (48, 48), "center_crop", 10**8))
        assert decoder.counts["fallback"] == 1


def test_corrupt_baseline_jpeg_gets_pillows_error() -> None:
    data = jpeg(photo(300))[:400]  # the frame header survives, the scan does not
    assert gpu_decodable(jpeg_info(data))
    decoder = gpu_like()
    with pytest.raises(InvalidImageError):
        decoder.decode(data, (32, 32), "stretch", 10**8)
    assert decoder.counts["fallback"] == 1


def test_pixel_limit_checked_before_any_gpu_work() -> None:
    backend = FakeBatchDecoder()
    with pytest.raises(ImageTooLargeError, match="300x300 pixels"):
        gpu_like(backend).decode(jpeg(photo(300)), (32, 32), "stretch", 300 * 300 - 1)
    assert backend.calls == []


def test_exif_orientation_applied_as_pillow_does() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 300x200 landscape file shows as 200x300 portrait
    wide = photo(300).crop((0, 0, 300, 200))
    data = jpeg(wide, exif=exif.tobytes())
    got = gpu_like().decode(data, (60, 40), "stretch", 10**8)
    want = decode_image(data, (60, 40), "stretch", 10**8)
    assert got.shape == want.shape == (60, 40, 3)
    assert np.abs(got.astype(int) - want).mean() < 3


@pytest.mark.parametrize("mode", ["stretch", "center_crop"])
@pytest.mark.parametrize("width", [512, 1024])
def test_train_serve_parity_of_the_gpu_path(mode: str, width: int) -> None:
    """GPU path (full decode + antialiased resize) vs Pillow (draft decode + bilinear).

    Measured (docs/gpu.md): mean difference 0.16-1.3 levels of 255, 99th percentile 1-15,
    97-100 % of values within 8 levels. The crop is computed on Pillow's draft size, so both
    paths cut the same region; what differs is libjpeg's reduced-scale decode against a full
    decode filtered down.
    """
    decoder = gpu_like()
    for array in real_photos():
        image = Image.fromarray(array)
        data = jpeg(image.resize((width, round(image.height * width / image.width))))
        got = decoder.decode(data, (224, 224), mode, 10**8)  # type: ignore[arg-type]
        want = decode_image(data, (224, 224), mode, 10**8)  # type: ignore[arg-type]
        diff = np.abs(got.astype(int) - want)
        assert got.shape == want.shape == (224, 224, 3)
        assert diff.mean() < 1.5, diff.mean()
        assert np.percentile(diff, 99) <= 16, np.percentile(diff, 99)
        assert (diff <= 8).mean() > 0.95


def test_resize_graph_matches_pillow_bilinear() -> None:
    """Same decoded pixels, resized by the device graph and by Pillow: within a level or so."""
    resizer = DeviceResizer(CPU)
    for array in real_photos():
        for size in [(224, 224), (100, 160), (300, 200)]:
            got = resizer(array, size, "stretch")
            want = np.asarray(Image.fromarray(array).resize(size[::-1], Image.Resampling.BILINEAR))
            diff = np.abs(got.astype(int) - want)
            assert diff.mean() < 0.25 and np.percentile(diff, 99) <= 1 and diff.max() <= 16


@pytest.mark.parametrize("width", [100, 223, 224, 447, 448, 900, 1792, 4000])
def test_draft_scale_is_pillows(width: int) -> None:
    data = jpeg(photo(64).resize((width, width // 2 + 1)))
    info = jpeg_info(data)
    assert info is not None
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (112, 112))
        pillow_scale = -(-width // image.size[0])
    assert draft_scale(info, (112, 100)) == pillow_scale


def test_resize_geometry_is_decode_images() -> None:
    assert resize_geometry(300, 400, (224, 224), "center_crop") == (224, 299, 0, 37)
    assert resize_geometry(400, 300, (224, 224), "center_crop") == (299, 224, 37, 0)
    assert resize_geometry(300, 400, (224, 224), "stretch") == (224, 224, 0, 0)
    assert resize_geometry(10, 10, (224, 112), "center_crop") == (224, 224, 0, 56)


def test_resize_model_is_valid_onnx() -> None:
    model = onnx.load_from_string(resize_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == [
        "Slice",
        "Reshape",
        "Transpose",
        "Unsqueeze",
        "Cast",
        "Concat",
        "Resize",
        "Slice",
        "Round",
        "Clip",
        "Cast",
        "Squeeze",
        "Transpose",
    ]
    resize = model.graph.node[6]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute} == {
        "mode": b"linear",
        "antialias": 1,
        "coordinate_transformation_mode": b"half_pixel",
    }
    session = ort.InferenceSession(resize_model(), providers=CPU)
    flat = np.full((5, 7 * 3), 200, dtype=np.uint8)
    (out,) = session.run(
        None,
        {
            "image": flat,
            "shape": np.array([5, 7, 3]),
            "row_ends": np.array([21]),
            "sizes": np.array([10, 14]),
            "starts": np.array([1, 2]),
            "ends": np.array([9, 12]),
        },
    )
    assert out.dtype == np.uint8 and out.shape == (8, 10, 3) and (out == 200).all()


def test_padded_rows_are_dropped_before_resizing() -> None:
    """A decoder's pitched rows (padding after each row's W x 3 bytes) give the same pixels
    as the unpadded image: the graph reads rows of the pitch and slices the padding off."""
    image = np.asarray(photo(50).convert("RGB"))  # (H, 50, 3)
    height, width, _ = image.shape
    pitch = 256
    padded = np.full((height, pitch), 255, dtype=np.uint8)
    padded[:, : width * 3] = image.reshape(height, -1)
    session = ort.InferenceSession(resize_model(), providers=CPU)

    def resized(rows: np.ndarray) -> np.ndarray:
        (out,) = session.run(
            None,
            {
                "image": rows,
                "shape": np.array([height, width, 3]),
                "row_ends": np.array([width * 3]),
                "sizes": np.array([20, 20]),
                "starts": np.array([0, 0]),
                "ends": np.array([20, 20]),
            },
        )
        return np.asarray(out)

    np.testing.assert_array_equal(resized(padded), resized(image.reshape(height, -1)))
    np.testing.assert_array_equal(
        DeviceResizer(CPU)(image, (20, 20), "stretch"), resized(image.reshape(height, -1))
    )


def test_device_layout_reads_the_pitch_from_the_array_interface() -> None:
    dense = {"shape": (4, 5, 3), "typestr": "|u1", "data": (1, False), "strides": None}
    assert device_layout(dense) == ((4, 5, 3), 15)
    assert device_layout({**dense, "strides": (64, 3, 1)}) == ((4, 5, 3), 64)
    with pytest.raises(ValueError, match="unsupported layout"):
        device_layout({**dense, "strides": (5, 20, 1)})  # planar-like, not interleaved rows
    with pytest.raises(ValueError, match="not 8-bit"):
        device_layout({**dense, "typestr": "<u2"})


# --- batching concurrent decodes --------------------------------------------------------------


def test_concurrent_decodes_are_batched_and_each_gets_its_own_image() -> None:
    backend = FakeBatchDecoder(delay_s=0.02)
    decoder = gpu_like(backend)
    colours = [(i * 13 % 256, i * 71 % 256, 255 - i * 5 % 256) for i in range(40)]
    bodies = [jpeg(Image.new("RGB", (64, 48), c)) for c in colours]
    with ThreadPoolExecutor(16) as pool:
        images = list(pool.map(lambda b: decoder.decode(b, (8, 8), "stretch", 10**8), bodies))
    for image, colour in zip(images, colours, strict=True):
        assert np.abs(image.reshape(-1, 3).mean(0) - colour).max() < 4
    assert sum(backend.calls) == 40
    assert max(backend.calls) > 1 and max(backend.calls) <= 8  # batched, within max_batch


def test_coalescer_failure_reaches_every_waiter() -> None:
    def boom(items: list[bytes]) -> list[object]:
        time.sleep(0.01)
        raise RuntimeError("decoder gone")

    coalescer = DecodeCoalescer(boom, max_batch=4)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(coalescer.submit, b"x") for _ in range(12)]
    for future in futures:
        with pytest.raises(RuntimeError, match="decoder gone"):
            future.result()


def test_coalescer_wrong_result_count_is_an_error() -> None:
    coalescer = DecodeCoalescer(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        coalescer.submit(b"x")


def test_lone_decode_is_not_delayed() -> None:
    """A lone item is decoded on its own thread at once, in a batch of one."""
    calls: list[list[bytes]] = []

    def upper(items: list[bytes]) -> list[bytes]:
        calls.append(items)
        return [item.upper() for item in items]

    coalescer = DecodeCoalescer(upper)
    assert coalescer.submit(b"abc") == b"ABC"
    assert calls == [[b"abc"]]
    assert coalescer.batch_sizes == [1]


# --- requests and the reference check use the same decoder ------------------------------------


async def test_requests_and_reference_check_use_the_chosen_decoder(
    repo: Path, start_app: object
) -> None:
    backend = FakeBatchDecoder()
    decoder = gpu_like(backend)
    red, blue = Image.new("RGB", (40, 30), (250, 10, 10)), Image.new("RGB", (40, 30), (10, 10, 250))
    publish(repo, "colours", 1, references=[(jpeg(red), 0), (jpeg(blue), 2)])
    settings_key = (True, True, 0)
    gpu_decode._chosen[settings_key] = decoder  # what image_decoder() would build on a GPU
    roost = await start_app(repo, gpu_decode=True)  # type: ignore[operator]
    await roost.wait_ready()
    assert backend.calls == [1, 1]  # both references went through the GPU path at load
    response = await roost.client.post(
        "/v1/classify", content=jpeg(red), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"][0]["label"] == "red"
    progressive = await roost.client.post(
        "/v1/classify",
        content=jpeg(Image.new("RGB", (40, 30), (10, 250, 10)), progressive=True),
        headers={"Content-Type": "image/jpeg"},
    )
    assert progressive.json()["results"][0]["predictions"][0]["label"] == "green"
    assert decoder.counts == {"gpu": 3, "pillow": 1, "fallback": 0}


async def test_gpu_decode_requested_on_this_machine_still_serves(
    repo: Path, start_app: object, caplog: pytest.LogCaptureFixture, no_cuda: None
) -> None:
    publish(repo, "colours", 1)
    with caplog.at_level(logging.WARNING, logger="service.runtime.decode.gpu_decode"):
        roost = await start_app(repo, gpu_decode=True)  # type: ignore[operator]
        await roost.wait_ready()
        response = await roost.client.post(
            "/v1/classify",
            content=jpeg(Image.new("RGB", (40, 30), (250, 10, 10))),
            headers={"Content-Type": "image/jpeg"},
        )
    assert response.status_code == 200
    assert len([r for r in caplog.records if r.name == "service.runtime.decode.gpu_decode"]) == 1


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


def test_resize_session_keeps_no_cpu_pool() -> None:
    """Called from every decode thread, the resize session runs its graph on the GPU: it has
    no CPU thread pool of its own to spin on the decode threads' cores."""
    options = DeviceResizer(CPU)._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# --- on a GPU only ----------------------------------------------------------------------------


@pytest.mark.gpu
def test_nvimgcodec_on_the_gpu_matches_pillow() -> None:
    """Runs where nvImageCodec and onnxruntime-gpu work (bench/gpu/run.sh on the GPU machine),
    in steps, so that a failure says which part differs: nvImageCodec's full-size pixels
    (copied to the host) against Pillow's; the resize graph on CUDA, reading them where they
    lie, against the same graph on the CPU; then the whole path against `decode_image`."""
    decoder = image_decoder(ServiceSettings(gpu_decode=True))
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
