"""Resizing a decoded image where it lies (`DeviceResizer`): an ONNX Runtime session over
device_resize.onnx, a small graph made by make_resize_model.py and shipped as package data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from roost.contract.card import ResizeMode

RESIZE_MODEL = Path(__file__).with_name("device_resize.onnx")
"""uint8 image rows + their shape, the size before the crop and the crop's box -> uint8
`(h, w, 3)`; the graph's steps are written out in make_resize_model.py."""


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
    """An ONNX Runtime session (CUDA, or the CPU in tests) over `RESIZE_MODEL`:
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
            str(RESIZE_MODEL), sess_options=options, providers=providers
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
