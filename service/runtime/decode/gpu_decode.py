"""Image decoding for requests: baseline JPEGs on the GPU (nvImageCodec), everything else Pillow.

`ROOST_GPU_DECODE=true` asks for GPU decoding. `image_decoder(settings)` answers the decoder
every request and every load-time reference check uses, chosen once per process:

- `PillowDecoder`: `roost.contract.images.decode_image`, the function training decodes with.
  The default, and the fallback when GPU decoding is off, or asked for but impossible (no
  `nvidia-nvimgcodec-cu12`/`-cu13` package, no CUDA provider, no GPU): then ONE warning says why.
- `GpuDecoder`: per request, by format. The hardware JPEG decoder takes baseline JPEG only, so
  the JPEG's frame marker is read first (`jpeg_info`): SOF0 (baseline, 8-bit, 1 or 3 components)
  goes to the GPU; progressive (SOF2), extended, lossless, CMYK, PNG, WebP ... go to Pillow.
  Baseline JPEGs from concurrent requests are decoded together (`DecodeCoalescer`: one
  `Decoder.decode` call per batch), into device memory, then resized on the device by an
  ONNX Runtime session (`DeviceResizer`), which reads the decoded pixels where they lie (IO
  binding on the device pointer): only the model-sized result comes back to the host. A JPEG
  the GPU fails on is decoded again by Pillow, which also gives the client its error.

Train/serve parity: the GPU path resizes the full-size decode with an antialiased bilinear
filter (ONNX `Resize`, `antialias=1`, which follows Pillow's), whereas Pillow first lets libjpeg
decode at a reduced scale (draft mode) and upsamples chroma differently. Pixels differ by a few
levels (tests/service/runtime/decode/test_gpu_decode.py; docs/gpu.md); the reference images in
card.json are checked at load through this same decoder, so a model whose top-1 flips under
GPU decoding is refused at load rather than served.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from roost.contract.card import ResizeMode
from roost.contract.errors import ImageTooLargeError
from roost.contract.images import decode_image
from service.runtime.classifier import CPU, CUDA, CudaRuntime
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

# --- what kind of JPEG is it? -----------------------------------------------------------------

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


# --- decoders ---------------------------------------------------------------------------------


class ImageDecoder(Protocol):
    """bytes -> `(H, W, 3)` uint8 at the model's size, raising what `decode_image` raises."""

    name: str

    def decode(
        self, data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
    ) -> np.ndarray: ...


class PillowDecoder:
    """`roost.contract.images.decode_image`: what training decodes with."""

    name = "pillow"

    def decode(
        self, data: bytes, size: tuple[int, int], resize: ResizeMode, max_pixels: int
    ) -> np.ndarray:
        return decode_image(data, size, resize, max_pixels)


PILLOW = PillowDecoder()

DecodeBatch = Callable[[list[bytes]], Sequence[Any]]
"""JPEG bytes -> one decoded RGB image per input (device or host array), None where it failed."""


class GpuDecoder:
    """Baseline JPEGs through `decode_batch` + `resizer`; everything else through Pillow."""

    name = "nvimgcodec"

    def __init__(
        self, decode_batch: DecodeBatch, resizer: DeviceResizer, max_batch: int = 64
    ) -> None:
        self._coalescer = DecodeCoalescer(decode_batch, max_batch)
        self.decode_batch = decode_batch
        """Its two parts, public for measuring each alone (bench/gpu)."""
        self.resizer = resizer
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
                image = self.resizer(decoded, size, resize, draft_scale(info, size))
                self.counts["gpu"] += 1
                return image
        except Exception as exc:  # a GPU failure must not fail the request: Pillow decides
            log.debug("GPU decode failed, decoding with Pillow: %s", exc)
        self.counts["fallback"] += 1
        return decode_image(data, size, resize, max_pixels)


class DecodeCoalescer:
    """Decodes items that threads submit in batches, one batch at a time.

    A submitting thread that finds no batch running takes everything waiting (up to
    `max_batch`, its own item included) and decodes it; threads that arrive meanwhile wait,
    and the next of them takes the next batch. So batches grow with the load by themselves
    and a lone request is decoded at once. `decode_batch` gets one call at a time (the
    nvImageCodec decoder is used from one thread at a time).
    """

    def __init__(self, decode_batch: DecodeBatch, max_batch: int = 64) -> None:
        self._decode_batch = decode_batch
        self._max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._busy = False
        self.batch_sizes: list[int] = []  # the most recent sizes, for tests and the bench

    def submit(self, item: bytes) -> Any:
        job = _Job(item)
        with self._cond:
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and self._busy:
                    self._cond.wait()
                if job.done:
                    return job.outcome()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._busy = True
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        try:
            results = list(self._decode_batch([job.item for job in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for job, result in zip(batch, results, strict=True):
                job.value = result
        except Exception as exc:
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._busy = False
                self.batch_sizes = [*self.batch_sizes[-255:], len(batch)]
                self._cond.notify_all()


class _Job:
    __slots__ = ("item", "value", "error", "done")

    def __init__(self, item: bytes) -> None:
        self.item = item
        self.value: Any = None
        self.error: Exception | None = None
        self.done = False

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


# --- resize on the device ---------------------------------------------------------------------


def draft_scale(info: JpegInfo, size: tuple[int, int]) -> int:
    """The reduction (1, 2, 4 or 8) at which `decode_image` lets libjpeg decode this JPEG
    (Pillow's `draft()`: the largest keeping both sides >= the model's larger side)."""
    side = max(size)
    scale = min(info.width // side, info.height // side)
    return next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)


def resize_geometry(
    height: int, width: int, size: tuple[int, int], mode: ResizeMode
) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, top, left): the centre crop's geometry in numbers, as
    `decode_image` defines it (it resamples only the kept box of that scaled image; the GPU
    resizes the whole image, then crops: pixels within one level)."""
    out_h, out_w = size
    if mode == "center_crop":
        scale = max(out_w / width, out_h / height)
        scaled_w = max(out_w, round(width * scale))
        scaled_h = max(out_h, round(height * scale))
        return scaled_h, scaled_w, (scaled_h - out_h) // 2, (scaled_w - out_w) // 2
    return out_h, out_w, 0, 0


class DeviceResizer:
    """An ONNX Runtime session (CUDA, or the CPU in tests) over `resize_model()`:
    uint8 `(H, W, 3)` in, wherever it lies -> resized and cropped uint8 `(h, w, 3)` on the host.

    A decoded image on the GPU (anything with `__cuda_array_interface__`) is bound by its
    device pointer, so it is not copied to the host; a numpy image is bound where it is.
    """

    def __init__(self, providers: list[Any], device_id: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # On CUDA the graph's work is the GPU's; ONNX Runtime's default CPU pool (a spinning
        # thread per core) would only take cores from the decode threads that call it.
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            resize_model(), sess_options=options, providers=providers
        )
        self._device_id = device_id

    def __call__(
        self, image: Any, size: tuple[int, int], mode: ResizeMode, draft: int = 1
    ) -> np.ndarray:
        """`draft`: the scale `decode_image` would have decoded this JPEG at; the crop is
        computed on that size, as Pillow computes it, so both paths cut the same region."""
        interface = getattr(image, "__cuda_array_interface__", None)
        if interface is not None:
            shape, row_bytes = device_layout(interface)
        else:
            image = np.ascontiguousarray(image, dtype=np.uint8)
            shape = image.shape
            row_bytes = int(np.prod(shape[1:]))
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"decoded to an unexpected shape {shape}")
        seen_h, seen_w = -(-shape[0] // draft), -(-shape[1] // draft)
        scaled_h, scaled_w, top, left = resize_geometry(seen_h, seen_w, size, mode)
        binding = self._session.io_binding()
        if interface is not None:
            rows = (shape[0], row_bytes)
            pointer = int(interface["data"][0])
            binding.bind_input("image", "cuda", self._device_id, np.uint8, rows, pointer)
        else:
            binding.bind_cpu_input("image", image.reshape(shape[0], row_bytes))
        binding.bind_cpu_input("shape", np.array(shape, dtype=np.int64))
        binding.bind_cpu_input("row_ends", np.array([shape[1] * 3], dtype=np.int64))
        binding.bind_cpu_input("sizes", np.array([scaled_h, scaled_w], dtype=np.int64))
        binding.bind_cpu_input("starts", np.array([top, left], dtype=np.int64))
        binding.bind_cpu_input("ends", np.array([top + size[0], left + size[1]], dtype=np.int64))
        binding.bind_output("pixels", "cpu")
        self._session.run_with_iobinding(binding)
        (pixels,) = binding.copy_outputs_to_cpu()
        return np.asarray(pixels, dtype=np.uint8)


def device_layout(interface: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """(shape, bytes from one row to the next) of a uint8 (H, W, 3) image on the device, from
    its `__cuda_array_interface__`. A decoder may pad its rows (a pitched allocation): the
    resize graph reads rows of that length and drops the padding."""
    shape = tuple(int(d) for d in interface["shape"])
    if interface.get("typestr") not in (None, "|u1", "<u1"):
        raise ValueError(f"decoded to {interface.get('typestr')}, not 8-bit")
    strides = interface.get("strides")
    if strides is None or len(shape) != 3:
        return shape, int(np.prod(shape[1:]))
    row, pixel, channel = (int(s) for s in strides)
    if pixel != shape[2] or channel != 1 or row < shape[1] * shape[2]:
        raise ValueError(f"decoded to an unsupported layout: shape {shape}, strides {strides}")
    return shape, row


def resize_model() -> bytes:
    """Serialized ONNX (opset 18, IR 8): uint8 image rows [H, row bytes], shape [3] (H, W, 3),
    row_ends [1] (W x 3), sizes [2] (h, w before the crop), starts [2], ends [2] -> Slice (drops
    row padding) -> Reshape (H, W, 3) -> Transpose + Unsqueeze (1, 3, H, W) -> Cast -> Resize
    (linear, antialias, half_pixel: Pillow's bilinear) -> Slice (the crop) -> Round -> Clip(0,
    255) -> Cast uint8 -> Squeeze + Transpose (h, w, 3). Resize sees NCHW because CUDA's
    antialiasing kernel takes rank 2 or 4 only: given (H, W, 3) it wrote wrong pixels (255
    levels off on an H200, 2026-11-26). Written with a few lines of protobuf encoding, so the
    server needs no `onnx` package; tests check it with `onnx.checker`."""
    nodes = [
        _node("Slice", ["image", "row_starts", "row_ends", "row_axes"], ["unpadded"]),
        _node("Reshape", ["unpadded", "shape"], ["hwc"]),
        _node("Transpose", ["hwc"], ["chw"], _attr_ints("perm", [2, 0, 1])),
        _node("Unsqueeze", ["chw", "batch_axis"], ["nchw"]),
        _node("Cast", ["nchw"], ["x"], _attr_int("to", _FLOAT)),
        _node(
            "Concat", ["one_image_three_channels", "sizes"], ["nchw_sizes"], _attr_int("axis", 0)
        ),
        _node(
            "Resize",
            ["x", "", "", "nchw_sizes"],
            ["resized"],
            _attr_str("mode", "linear"),
            _attr_int("antialias", 1),
            _attr_str("coordinate_transformation_mode", "half_pixel"),
        ),
        _node("Slice", ["resized", "starts", "ends", "spatial_axes"], ["cropped"]),
        _node("Round", ["cropped"], ["rounded"]),
        _node("Clip", ["rounded", "low", "high"], ["clipped"]),
        _node("Cast", ["clipped"], ["nchw_out"], _attr_int("to", _UINT8)),
        _node("Squeeze", ["nchw_out", "batch_axis"], ["chw_out"]),
        _node("Transpose", ["chw_out"], ["pixels"], _attr_ints("perm", [1, 2, 0])),
    ]
    initializers = [
        _tensor("row_starts", _INT64, [1], np.array([0], dtype="<i8").tobytes()),
        _tensor("row_axes", _INT64, [1], np.array([1], dtype="<i8").tobytes()),
        _tensor("batch_axis", _INT64, [1], np.array([0], dtype="<i8").tobytes()),
        _tensor("one_image_three_channels", _INT64, [2], np.array([1, 3], dtype="<i8").tobytes()),
        _tensor("spatial_axes", _INT64, [2], np.array([2, 3], dtype="<i8").tobytes()),
        _tensor("low", _FLOAT, [], np.array(0, dtype="<f4").tobytes()),
        _tensor("high", _FLOAT, [], np.array(255, dtype="<f4").tobytes()),
    ]
    graph = b"".join(
        [
            *(_field(1, n) for n in nodes),
            _field(2, "roost_resize"),
            *(_field(5, t) for t in initializers),
            _field(11, _value_info("image", _UINT8, ["H", "R"])),
            _field(11, _value_info("shape", _INT64, [3])),
            _field(11, _value_info("row_ends", _INT64, [1])),
            _field(11, _value_info("sizes", _INT64, [2])),
            _field(11, _value_info("starts", _INT64, [2])),
            _field(11, _value_info("ends", _INT64, [2])),
            _field(12, _value_info("pixels", _UINT8, ["h", "w", 3])),
        ]
    )
    opset = _field(1, "") + _varint_field(2, 18)
    return _varint_field(1, 8) + _field(2, "roost") + _field(7, graph) + _field(8, opset)


# The few protobuf encodings an ONNX ModelProto needs (field numbers from onnx.proto).
_FLOAT, _UINT8, _INT64 = 1, 2, 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _attr_int(name: str, value: int) -> bytes:
    return _field(1, name) + _varint_field(20, 2) + _varint_field(3, value)  # type INT


def _attr_ints(name: str, values: list[int]) -> bytes:
    return _field(1, name) + _varint_field(20, 7) + b"".join(_varint_field(8, v) for v in values)


def _attr_str(name: str, value: str) -> bytes:
    return _field(1, name) + _varint_field(20, 3) + _field(4, value)  # type STRING


def _node(op: str, inputs: list[str], outputs: list[str], *attributes: bytes) -> bytes:
    return b"".join(
        [
            *(_field(1, i) for i in inputs),
            *(_field(2, o) for o in outputs),
            _field(4, op),
            *(_field(5, a) for a in attributes),
        ]
    )


def _tensor(name: str, dtype: int, dims: list[int], raw: bytes) -> bytes:
    return b"".join(
        [*(_varint_field(1, d) for d in dims), _varint_field(2, dtype), _field(8, name)]
    ) + _field(9, raw)


def _value_info(name: str, dtype: int, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _field(1, _varint_field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims
    )
    tensor_type = _varint_field(1, dtype) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor_type))


# --- nvImageCodec -----------------------------------------------------------------------------


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


# --- the process-wide choice ------------------------------------------------------------------

_chosen: dict[tuple[bool, bool, int], ImageDecoder] = {}
_choosing = threading.Lock()


def image_decoder(settings: ServiceSettings) -> ImageDecoder:
    """The decoder for these settings, built once per process (the first model load)."""
    key = (settings.gpu_decode, settings.use_cuda, settings.cuda_device_id)
    with _choosing:
        if key not in _chosen:
            _chosen[key] = _open(settings)
        return _chosen[key]


def forget_decoders() -> None:
    """Drop the cached choices (tests)."""
    with _choosing:
        _chosen.clear()


def _open(settings: ServiceSettings) -> ImageDecoder:
    if not settings.gpu_decode:
        return PILLOW
    try:
        decoder = _open_gpu(settings)
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
    return decoder


def _open_gpu(settings: ServiceSettings) -> GpuDecoder:
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

    cudart = CudaRuntime.load()
    batch = NvImageCodecBatch(nvimgcodec, settings.cuda_device_id, cudart)
    resizer = DeviceResizer(
        [(CUDA, {"device_id": str(settings.cuda_device_id)}), CPU], settings.cuda_device_id
    )
    return GpuDecoder(batch, resizer, max_batch=max(1, settings.max_batch_size))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().split("\n")[0] or type(exc).__name__)[:300]
